# SwiMDiff for QGIS — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data
APT_PACKAGES := qgis python3-qgis qgis-providers gdal-bin xvfb xauth python3-venv python3-pip imagemagick
STAMP := $(VENV)/.installed
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup apt venv demo demo-pretrain demo-landcover demo-adapt bench-cv default-model test lint bench-pretrain bench-detect bench-ablation bench-classify bench-adapt clean zip deploy

## setup: everything the project needs, idempotent (apt packages when missing, .venv, pinned runtime + dev deps)
setup: apt $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# requirements-dev.txt = -r requirements.txt + the dev tools: ONE pip call, or pip may swap torch between calls
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## demo: set-up, then the main job: a change map of a real OSCD city pair with the default model, scored
demo: setup
	$(PY) scripts/demo.py --data $(DATA)

## demo-pretrain: a short SwiMDiff pre-training (150 steps) on the real unlabelled Sentinel-2 scenes
demo-pretrain: setup
	$(PY) scripts/demo_pretrain.py --data $(DATA)

## demo-landcover: train a land-cover classifier on 100 real EuroSAT patches, map a real Sentinel-2 scene (~3 min CPU)
demo-landcover: setup
	$(PY) scripts/demo_landcover.py --data $(DATA)

## demo-adapt: adapt the shipped change model to polygons over half of a real unseen city (mumbai), map and score the rest (~2 min CPU)
demo-adapt: setup
	$(PY) scripts/demo_adapt.py --data $(DATA)

## default-model: re-create resources/models/oscd-change (pre-train 1500 steps, cross-validate the recipe, fine-tune on all 10 labelled cities; ~60 min CPU)
default-model: setup
	$(PY) scripts/make_default_model.py --data $(DATA)

## test: set-up, lint (ruff, mypy), then the whole test suite
test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check core swimdiff_qgis tests scripts bench __init__.py
	$(VENV)/bin/mypy --ignore-missing-imports --explicit-package-bases core  # module names from here: any clone folder name works

## bench-pretrain: step time of MoCo, MoCo+SwM and full SwiMDiff side by side (13 bands, 96x96, batch 64)
bench-pretrain: setup
	$(PY) bench/bench_pretrain.py

## bench-detect: streamed model detection on 2048^2 and 8192^2 13-band rasters (Mpx/s, FLOP/s share, peak RSS)
bench-detect: setup
	mkdir -p runs
	$(PY) bench/bench_detect.py --sizes $${SIZES:-2048,8192}

## bench-ablation: random init vs MoCo vs MoCo+SwM vs MoCo+diffusion vs SwiMDiff, equal budget (~90 min CPU)
bench-ablation: setup
	$(PY) bench/ablation.py --data $(DATA)

## bench-classify: random init vs SwiMDiff encoder on the small real land-cover samples (~30 min CPU; ENCODER=DIR skips ~30 min pre-training)
bench-classify: setup
	$(PY) bench/bench_classify.py --data $(DATA) $(if $(ENCODER),--encoder $(ENCODER))

## bench-adapt: adapt the shipped change model to polygons of each city's top half, score its bottom half (~15 min CPU)
bench-adapt: setup
	$(PY) bench/bench_adapt.py --data $(DATA)

## bench-cv: leave-two-cities-out cross-validation of the shipped change recipe over the 10 labelled cities (ENCODER=DIR, SEEDS=0,1, CV_ARGS="--recipe NAME=FLAGS"; ~4 min per fold and seed on 2 CPU cores, resumable)
bench-cv: setup
	$(PY) bench/bench_cv.py --data $(DATA) --encoder $${ENCODER:-runs/pretrain-1500} --seeds $${SEEDS:-0,1} $${CV_ARGS:-}

## zip: dist/swimdiff.zip for QGIS's "Install from ZIP" (plugin, core, resources; no tests or dev files;
## its README.md is resources/README-plugin.md, written for the installed plugin)
ZIP ?= dist/swimdiff.zip
ZIP_BUILD ?= build/zip
ZIP_EXCLUDE := ^(tests|bench|docs|scripts|\.ci)/|^\.gitignore$$|^README\.md$$|^resources/(make_icon\.py|README-plugin\.md)$$|(^|/)__pycache__/
zip:
	@rm -rf $(ZIP_BUILD) && mkdir -p $(ZIP_BUILD)/swimdiff $(dir $(ZIP))
	@git ls-files --cached --others --exclude-standard | grep -Ev '$(ZIP_EXCLUDE)' \
	  | while read -r f; do [ -f "$$f" ] && echo "$$f"; done | xargs -d '\n' cp --parents -t $(ZIP_BUILD)/swimdiff
	@cp resources/README-plugin.md $(ZIP_BUILD)/swimdiff/README.md
	@rm -f $(ZIP) && cd $(ZIP_BUILD) && zip -qr $(abspath $(ZIP)) swimdiff
	@echo "$(ZIP): $$(unzip -Z1 $(ZIP) | grep -vc /$$) files"

## deploy: link this working tree into a QGIS profile's plugin folder (QGIS_PROFILE=default)
QGIS_PROFILE ?= default
QGIS_PLUGINS ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/$(QGIS_PROFILE)/python/plugins
deploy:
	mkdir -p $(QGIS_PLUGINS)
	ln -sfn $(CURDIR) $(QGIS_PLUGINS)/swimdiff
	@echo "linked $(QGIS_PLUGINS)/swimdiff -> $(CURDIR); enable SwiMDiff in QGIS's Plugin Manager"

clean:
	rm -rf runs build *.egg-info
