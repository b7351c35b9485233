# The two commands of the quick start are `make lab` and `make test`; both install what is
# missing first (Debian packages, the virtualenv, the Kubernetes control plane built from Go
# modules into $(BGPD_CACHE), outside the repo so a second run is quick).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export BGPD_CACHE ?= /var/cache/bgpd

# Debian packages the tests and the lab use: real routers, the kernel's tools, certificates.
# OpenBGPD: a third BGP implementation the integration suite peers with. For the real
# kubelet (tests/kubelet/): runc and the loopback CNI plugin to run pods, gcc and libc6-dev
# to build the static pause binary.
APT_PACKAGES := frr bird2 openbgpd iproute2 iputils-ping procps openssl \
	runc containernetworking-plugins gcc libc6-dev
# A file each package provides, to see whether it is already there.
APT_PROBES := /usr/lib/frr/bgpd /usr/sbin/bird /usr/sbin/bgpctl /usr/sbin/ip /usr/bin/ping /usr/bin/pkill /usr/bin/openssl \
	/usr/sbin/runc /usr/lib/cni/loopback /usr/bin/gcc /usr/include/stdio.h

.PHONY: all deps venv controlplane kubelet promtool lint unit integration e2e test lab lab-down bench clean image

all: test

deps:
	@missing=0; for f in $(APT_PROBES); do [ -e $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

controlplane:
	bash tests/controlplane/build.sh

# What a lab node needs to run the DaemonSet's pods for real (tests/e2e/test_kubelet.py):
# kubelet (same pin as the API server), containerd + shim + ctr, the pause image; built from
# Go modules and pause.c into $(BGPD_CACHE) next to the control plane (which it builds too).
kubelet: deps
	bash tests/controlplane/build.sh kubelet

# promtool for the alert rules' tests, from Debian's prometheus package (nothing installed).
promtool:
	bash tests/monitoring/promtool.sh

# The agent image localhost/bgpd:dev, offline: a Debian base from mmdebstrap and PyPI wheels,
# both cached in $(BGPD_CACHE)/image (daemonset/image/build.sh).
image:
	bash daemonset/image/build.sh

lint: venv
	$(BIN)/ruff check .

unit: venv
	$(BIN)/python -m pytest -q tests/unit

# pytest exits 5 when it collected nothing: that is a broken suite, never a pass.
test: deps venv controlplane kubelet promtool lint
	$(BIN)/python -m pytest tests; rc=$$?; \
	if [ $$rc = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

lab: deps venv controlplane
	$(BIN)/bgpd lab up lab/single-tor.clab.yml --with-examples

lab-down: venv
	$(BIN)/bgpd lab down lab/single-tor.clab.yml

# Every bench, repeated (medians and spread), into bench/results/<date-time>.jsonl, plotted
# into bench/plots/ (bench/report.py; `--quick` for fewer runs, `--only NAME,...`).
bench: deps venv controlplane
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/report.py run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
