# Thin wrapper over the scripts: `make run`, `make test`, `make build`, `make clean`.
.PHONY: all build run test clean
all: build
build:
	scripts/deps.sh build && scripts/build.sh build
run:
	scripts/run.sh
test:
	scripts/test.sh
clean:
	rm -rf build build-san
