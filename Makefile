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
# Which torch build goes into .venv/ (README, "Install size"):
#   auto  the CUDA build where `nvidia-smi` lists a GPU, else the CPU build (default)
#   cpu   the CPU build (about 1 GB installed) from TORCH_CPU_INDEX
#   cuda  PyPI's default build (CUDA libraries included, about 6 GB)
# The CPU build comes from PyTorch's own index; where it cannot be reached (offline machines, CI
# here), `auto` falls back to PyPI's default build with a note, and `cpu` stops with an error.
TORCH_VARIANT ?= auto
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PINS := $(shell grep -E '^(torch|torchvision)==' requirements_pip.txt)
HAS_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo yes)
TORCH_BUILD := $(if $(filter auto,$(TORCH_VARIANT)),$(if $(HAS_GPU),cuda,cpu),$(TORCH_VARIANT))

.PHONY: setup venv install model demo test benchmarks clean

setup: venv install

venv: $(VENV)/.requirements-installed

# requirements_mediapipe.txt goes in without dependencies (see the file: mediapipe's declared ones
# would put opencv-contrib-python's cv2 over opencv-python's).
$(VENV)/.requirements-installed: requirements_pip.txt requirements_mediapipe.txt
	@case "$(TORCH_VARIANT)" in auto|cpu|cuda) ;; *) echo "TORCH_VARIANT=$(TORCH_VARIANT): expected auto, cpu or cuda"; exit 2;; esac
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	@if [ "$(TORCH_BUILD)" = cpu ]; then \
	  echo "torch: the CPU build from $(TORCH_CPU_INDEX) (TORCH_VARIANT=$(TORCH_VARIANT))"; \
	  $(PY) -m pip install --quiet --timeout 15 --retries 1 --index-url $(TORCH_CPU_INDEX) $(TORCH_PINS) \
	  || if [ "$(TORCH_VARIANT)" = cpu ]; then echo "error: $(TORCH_CPU_INDEX) did not give $(TORCH_PINS)"; exit 1; \
	     else echo "note: the CPU build is not reachable at $(TORCH_CPU_INDEX); installing PyPI's default (CUDA) build"; fi; \
	else echo "torch: PyPI's default (CUDA) build (TORCH_VARIANT=$(TORCH_VARIANT))"; fi
	$(PY) -m pip install --quiet -r requirements_pip.txt
	$(PY) -m pip install --quiet --no-deps -r requirements_mediapipe.txt
	touch $@

# The project itself, editable (import names core, models, utils from any folder), which also
# builds the Cython kernels (setup.py: rasterizer, colour term, diffusion, texels, text rows,
# dlib's predictor) in place. No build isolation: the build needs only what requirements_pip.txt
# installed (setuptools, Cython, numpy), offline.
install: $(VENV)/.project-installed

$(VENV)/.project-installed: $(VENV)/.requirements-installed pyproject.toml setup.py core/render/_rasterize.pyx \
		core/fitting/_shading.pyx core/fitting/_sh.pxd core/rig/_diffusion.pyx core/rig/_texels.pyx \
		utils/io/_text.pyx utils/landmarks/_dlib_format.pyx
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
	rm -rf build core/render/_rasterize.c core/fitting/_shading.c core/rig/_diffusion.c utils/io/_text.c \
	  core/render/*.so core/fitting/*.so core/rig/*.so utils/io/*.so *.egg-info .pytest_cache $(VENV)/.project-installed
