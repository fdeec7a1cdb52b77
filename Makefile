# splatfield — setup and the two everyday commands. Everything here installs what it
# needs on a fresh machine: Debian packages (when run as root), a virtual environment,
# the pinned CPU build of torch, and the project itself.
#
#   make demo    set up, then run the demo
#   make test    set up, then run the test suite
#
# On a machine with an NVIDIA GPU pick a CUDA build of torch, e.g.
#   make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url <your CUDA wheel index>"

VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# chromium: the real browser of the viewer's tests (driven by playwright, software WebGL);
# libusb-1.0-0: open3d (mesh export) does not import without it
APT_PACKAGES ?= g++ make python3-venv chromium libusb-1.0-0
PYTEST_ARGS ?=
# third-party splat tools the interop tests run (tests/interop/package.json, pinned by its lock)
INTEROP := tests/interop

.PHONY: setup demo test bench clean-cache

setup: $(VENV)/.installed $(INTEROP)/node_modules/.installed

# npm, for the interop tools; Node itself comes from npm's `node` package (splat-transform needs
# Node >= 22). Debian's nodejs+npm only where there is no npm yet (a NodeSource nodejs ships
# its own npm, which Debian's npm package would conflict with). Without the npm registry the
# setup goes on and the interop tests skip, saying why (CI sets SPLATFIELD_REQUIRE_INTEROP=1).
$(INTEROP)/node_modules/.installed: $(INTEROP)/package.json $(INTEROP)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian packages: nodejs npm"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; fi
	@if command -v npm >/dev/null 2>&1 && (cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error); then \
	  touch $@; else echo "warning: the interop tools (npm) could not be installed; their tests will skip"; fi

$(VENV)/.installed: pyproject.toml Makefile
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

demo: setup
	$(VENV)/bin/splatfield demo

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/splatfield bench raster --scene ../shared/bench/gaussians_100k.bin --backend native

clean-cache:
	rm -rf $${XDG_CACHE_HOME:-$$HOME/.cache}/splatfield

# The prepared run for a lent GPU machine (.ci/gpu-check, docs/bench/gpu/README.md). On the
# device, with .gpu/ carried: `make gpu-check` (= python3 .ci/gpu-check; no venv there, no
# setup: the device has no network). Here: `make gpu-check ARGS=--prepare` fills .gpu/ first;
# `make gpu-check-dry` runs every stage on the CPU with tiny sizes and prints the device call.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
.PHONY: gpu-check gpu-check-dry

gpu-check:
	$(GPU_PY) .ci/gpu-check $(ARGS)

gpu-check-dry: setup
	$(GPU_PY) .ci/gpu-check --dry-run $(ARGS)
