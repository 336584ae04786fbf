# The README's two set-up commands are `make demo` and `make test`; both bootstrap .venv.
.PHONY: demo test unit sanity lint bench fuzz load hostile-load clean

demo:
	scripts/demo

test:
	scripts/test

unit:
	scripts/test unit

sanity:
	scripts/test sanity

lint:
	scripts/test lint

bench:
	scripts/bench

fuzz:
	scripts/fuzz --long

load:
	scripts/load-test

hostile-load:
	scripts/hostile-load

clean:
	rm -rf .venv tests/output var bench-results
