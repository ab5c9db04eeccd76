# One-command set-up and the two entry points of the README:
#   make demo   installs everything into .venv/, prepares the face model and runs the demo
#   make test   the same set-up, then the whole test suite
# Everything is idempotent: a second run only redoes what changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_ICT := $(abspath ..)/shared/data/face_models/ICT-FaceKit.tar.xz
# Developers and CI unpack the ICT model from ../shared; real users download it from GitHub.
export INORIG_ICT_SOURCE ?= $(if $(wildcard $(SHARED_ICT)),$(SHARED_ICT),)
PYTEST_ARGS ?= -q
# OpenMP threads that spin while waiting stall torch badly when the 2 cores are shared.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup venv install model demo test benchmarks clean

setup: venv install

venv: $(VENV)/.requirements-installed

# requirements_mediapipe.txt goes in without dependencies (see the file: mediapipe's declared ones
# would put opencv-contrib-python's cv2 over opencv-python's).
$(VENV)/.requirements-installed: requirements_pip.txt requirements_mediapipe.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements_pip.txt
	$(PY) -m pip install --quiet --no-deps -r requirements_mediapipe.txt
	touch $@

# The project itself, editable (import names core, models, utils from any folder), which also
# builds the Cython rasterizer (core/render/_rasterize.pyx) in place. No build isolation: the
# build needs only what requirements_pip.txt installed (setuptools, Cython, numpy), offline.
install: $(VENV)/.project-installed

$(VENV)/.project-installed: $(VENV)/.requirements-installed pyproject.toml setup.py core/render/_rasterize.pyx
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

model: venv
	$(PY) -m utils.get_face_model ict

demo: setup model
	$(PY) demo.py

# Tests skip (with a reason) what needs data that is absent, so a model that cannot be prepared
# here does not stop the suite.
test: setup
	-$(PY) -m utils.get_face_model ict
	INORIG_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

benchmarks: setup model
	@for b in benchmarks/bench_*.py; do m=$$(basename $$b .py); echo "== $$m"; $(PY) -m benchmarks.$$m || exit 1; done

clean:
	rm -rf build core/render/*.so core/render/_rasterize.c *.egg-info .pytest_cache $(VENV)/.project-installed
