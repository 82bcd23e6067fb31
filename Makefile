# strata.ops: two commands for a new machine, `make demo` and `make test`.
# Each installs what it needs (venv, Debian packages, dockerd, zfs-fuse, CRIU, images).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV)/bin)
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
PYTHON ?= python3
# Integration test files mostly wait (pods terminating, rate-limited downloads, boots).
INTEGRATION_WORKERS ?= 3
# How many of lint, sanity, unit, integration and molecule `make test` runs at once.
TEST_JOBS ?= 3

.PHONY: all venv testbed testbed-base demo test lint ruff ansible-lint changelog-lint sanity unit integration molecule components bench lock clean ee release core-range docs

all: venv

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements/lock.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: apt-get install python3 python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "make: cannot create $(VENV): apt-get install python3-venv"; exit 1; }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/lock.txt
	touch $@

# Regenerate the pinned set from the direct dependencies.
lock:
	rm -rf .tmp/lockvenv && $(PYTHON) -m venv .tmp/lockvenv
	.tmp/lockvenv/bin/pip install -q -r requirements/base.in
	{ echo "# Pinned from requirements/base.in by 'make lock'. Python 3.11."; .tmp/lockvenv/bin/pip freeze; } > requirements/lock.txt

# STRATA_TESTBED_UP=1: `make test` brought the test bed up already, before its parallel part.
testbed:
	[ -n "$${STRATA_TESTBED_UP:-}" ] || tests/testbed/up all

testbed-base:
	[ -n "$${STRATA_TESTBED_UP:-}" ] || tests/testbed/up base

demo: venv testbed
	tests/demo

lint: ruff ansible-lint changelog-lint

ruff: venv
	ruff check .
	ruff format --check .

ansible-lint: venv
	ansible-lint --profile production

# Every change lands with a fragment in changelogs/fragments/; releases are generated from them.
changelog-lint: venv
	antsibull-changelog lint
	antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml

sanity: venv
	tests/sanity/run

unit: venv
	pytest -q tests/unit

# A test file runs in one worker (--dist loadfile): files share the lab but not state.
# tests/reliability (issue 20's sweep: killed runs, faults, secrets) runs on the same test bed; the
# tests marked exclusive (the API server stopped; the QEMU guest, a core busy for a minute; the scan
# for secrets in what every run wrote, last) run alone afterwards, in file order.
integration: venv testbed
	pytest -q -n $(INTEGRATION_WORKERS) --dist loadfile --durations=15 -m "not exclusive" tests/integration tests/reliability
	pytest -q --durations=8 -m exclusive tests/integration tests/reliability

molecule: venv testbed-base
	STRATA_HOST_IMAGE=$$(tests/testbed/up image) molecule test --all

# The execution environment image (execution-environment.yml), built offline and tagged by the hash
# of its inputs: strata-ops-ee:<hash> and :latest. The integration tests build it the same way.
ee: venv testbed-base
	tests/ee/build

# A release: VERSION (default: galaxy.yml's) written to galaxy.yml, CHANGELOG.rst and
# changelogs/changelog.yaml from the fragments (antsibull-changelog release), then
# build/strata-ops-VERSION.tar.gz. It changes the checkout: review and commit the result.
# Tests run the same steps on a temporary copy (tests/integration/test_release.py).
release: venv
	tests/release/build $(if $(VERSION),--version $(VERSION))

# The ansible-core range meta/runtime.yml claims: unit tests and the installed tarball's flows on
# its oldest and newest core, each in a venv cached under ~/.cache/strata-ops/core-range.
core-range: venv
	$(PY) tests/release/core_range

components:
	tests/testbed/status --line

# The test bed comes up once; then the checks that need none (lint, sanity, unit), the
# integration files (mostly waiting on pods, downloads and boots) and molecule (hosts and a
# cluster of its own) run side by side, each one's output kept together.
test: venv testbed
	STRATA_TESTBED_UP=1 $(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target lint sanity unit integration molecule
	@tests/testbed/status --line $${CI:+--require}

# The docs site, built offline into .tmp/docs/site/ (index.html); fails on a broken link or anchor.
docs: venv
	tests/docs/build

bench: venv testbed-base
	bench/run $(B)

clean:
	tests/testbed/down --lab
	rm -rf $(VENV) .tmp
