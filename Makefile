test: redis-server
	cargo test --locked
	bash e2e/run.sh

# The rate-limit tests start their own redis-server; install it where it is missing.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null || { echo "redis-server could not be installed" >&2; exit 1; }

.PHONY: test redis-server
