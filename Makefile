# The two first-run commands. Each makes the project's own virtual environment (.venv, reused on the
# next run) and installs what it needs; on a machine without an NVIDIA GPU, torch's CPU build.
#   make demo    the main job: the ThinkDiff-LVLM recipe on tiny stand-ins, on a CPU, nothing downloaded
#   make test    the test suite (offline, tiny models)
# Variables: VENV (where the environment lives), PYTHON (the Python that makes it),
# PIP_ARGS (extra pip requirements for a VENV of their own, e.g. VENV=.venv-4.57 PIP_ARGS='transformers==4.57.*',
# as .ci/run does). Editing pyproject.toml or scripts/venv.sh reinstalls on the next run.
VENV ?= .venv
PYTHON ?= python3
PIP_ARGS ?=

.PHONY: demo test
demo: $(VENV)/.installed-train
	$(VENV)/bin/python -m train.demo

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q

$(VENV)/.installed-%: pyproject.toml scripts/venv.sh
	PYTHON=$(PYTHON) scripts/venv.sh $(VENV) $* $(PIP_ARGS)
	touch $@
