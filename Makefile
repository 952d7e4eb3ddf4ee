test:
	cargo test --locked
	bash e2e/run.sh

.PHONY: test
