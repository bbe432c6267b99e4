# depth_perception — the two commands of the README, plus a few helpers.
#   make demo   bootstrap, then run the main job end to end over real ROS 2 (DDS on loopback)
#   make test   bootstrap, then lint and the whole test suite
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
ENV := source ./env.sh
# Demo and tests talk DDS on this machine only.
LOCAL_DDS := export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST;

.PHONY: bootstrap demo test lint format bench clean
bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@$(ENV); $(LOCAL_DDS) depth-perception demo --out out/demo

test: bootstrap
	@$(ENV); ruff check .
	@$(ENV); $(LOCAL_DDS) python -m pytest test -q -p no:cacheprovider

lint: bootstrap
	@$(ENV); ruff check . && \
	  ruff format --check .

format: bootstrap
	@$(ENV); ruff format .

bench: bootstrap
	@$(ENV); for b in bench/bench_*.py; do echo "== $$b"; python "$$b"; done

clean:
	rm -rf .build out env.sh
