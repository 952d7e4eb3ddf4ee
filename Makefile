test: test-tools
	cargo test --locked
	bash e2e/run.sh

# The integration tests start their own redis-server and make RSA keys with openssl;
# install them where they are missing.
test-tools:
	@command -v redis-server >/dev/null && command -v openssl >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server openssl >/dev/null; }
	@command -v redis-server >/dev/null || { echo "redis-server could not be installed" >&2; exit 1; }
	@command -v openssl >/dev/null || { echo "openssl could not be installed" >&2; exit 1; }

.PHONY: test test-tools
