# SwiMDiff for QGIS — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data
APT_PACKAGES := qgis python3-qgis qgis-providers xvfb xauth python3-venv python3-pip imagemagick
STAMP := $(VENV)/.installed
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup apt venv demo test lint bench-pretrain bench-detect clean

## setup: everything the project needs, idempotent (apt packages when missing, .venv, pinned pip deps)
setup: apt $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## demo: set-up, then a short SwiMDiff pre-training on real Sentinel-2 scenes
demo: setup
	$(PY) scripts/demo.py --data $(DATA)

## test: set-up, lint (ruff, mypy), then the whole test suite
test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check core swimdiff_qgis tests scripts bench __init__.py
	$(VENV)/bin/mypy --ignore-missing-imports core

## bench-pretrain: step time of MoCo, MoCo+SwM and full SwiMDiff side by side (13 bands, 96x96, batch 64)
bench-pretrain: setup
	$(PY) bench/bench_pretrain.py

## bench-detect: streamed model detection on 2048^2 and 8192^2 13-band rasters (Mpx/s, FLOP/s share, peak RSS)
bench-detect: setup
	mkdir -p runs
	$(PY) bench/bench_detect.py --sizes $${SIZES:-2048,8192}

clean:
	rm -rf runs build *.egg-info
