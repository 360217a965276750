# Set-up from nothing: a virtual environment, torch first from an overridable pin (a bare `torch`
# requirement would pull multi-GB CUDA wheels onto a CPU machine), then the package with its test extras.
#   make run                      the main job on the embedded default
#   make test                     the test suite
#   make TORCH_SPEC="torch==2.5.1" setup     another torch build
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_FLAGS ?= --quiet --disable-pip-version-check
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst /,_,$(subst =,_,$(TORCH_SPEC)))
MODEL ?= build/tiny-sca

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[test]"
	touch $@

$(MODEL)/config.json: | $(STAMP)
	$(BIN)/python -m sca.models.tiny $(MODEL)

run: $(STAMP) $(MODEL)/config.json
	$(BIN)/sca caption src/sca/assets/sample.png --model $(MODEL) \
		--box 30,40,110,120 --box 140,110,220,190 --box 200,60,300,150 --out annotated.png

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build annotated.png
