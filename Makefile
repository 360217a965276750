# Set-up from nothing: a virtual environment, torch first from an overridable pin (a bare `torch`
# requirement would pull multi-GB CUDA wheels onto a CPU machine), then the package with its test extras.
#   make run                      the main job on the embedded default
#   make test                     the test suite
#   make TORCH_SPEC="torch==2.5.1" setup     another torch build
#   make TORCH_INDEX=https://download.pytorch.org/whl/cpu setup
#                                 torch from PyTorch's own CPU wheel index: on a stock Linux machine a plain
#                                 `pip install torch==X` pulls the CUDA build (several GB of nvidia-* wheels)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_FLAGS ?= --quiet --disable-pip-version-check
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst /,_,$(subst =,_,$(TORCH_SPEC)))
SHAPES_RUN ?= build/shapes-model

.PHONY: setup run test default-model shapes-sam2-model clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[test]"
	touch $@

# The shipped shapes model captions the three shapes of the sample image (boxes: python -m sca.assets.build sample).
run: $(STAMP)
	$(BIN)/sca caption src/sca/assets/sample.png \
		--box 35,97,73,135 --box 89,137,158,206 --box 156,26,238,98 --out annotated.png

# Retrain the shipped model from scratch (CPU, about 95 minutes on an idle 2-core machine), install it, and
# benchmark it. A curriculum: stage 1 and two caption cycles on the classic shapes world, two cycles on the rich
# world (data=shapes), then a short stage that sharpens the masks (train=shapes-sharpen). Started on the rich world, the caption path learns far more slowly (README, "The shipped model").
CLASSIC = data=shapes-classic train.args.max_steps=5000
default-model: $(STAMP)
	$(BIN)/sca train model=sca-shapes train=shapes-model data=shapes-classic output_dir=$(SHAPES_RUN)/stage-1
	$(BIN)/sca train model=pretrained model.path=$(SHAPES_RUN)/stage-1/final train=shapes-captions $(CLASSIC) \
		output_dir=$(SHAPES_RUN)/stage-2
	$(BIN)/sca train model=pretrained model.path=$(SHAPES_RUN)/stage-2/final train=shapes-captions $(CLASSIC) \
		output_dir=$(SHAPES_RUN)/stage-3
	$(BIN)/sca train model=pretrained model.path=$(SHAPES_RUN)/stage-3/final train=shapes-captions \
		output_dir=$(SHAPES_RUN)/stage-4
	$(BIN)/sca train model=pretrained model.path=$(SHAPES_RUN)/stage-4/final train=shapes-captions \
		output_dir=$(SHAPES_RUN)/stage-5
	$(BIN)/sca train model=pretrained model.path=$(SHAPES_RUN)/stage-5/final train=shapes-sharpen \
		output_dir=$(SHAPES_RUN)/stage-6
	$(BIN)/python -m sca.assets.build model $(SHAPES_RUN)/stage-6/final
	$(BIN)/sca bench quality --out $(SHAPES_RUN)/quality
	$(BIN)/sca bench video --out $(SHAPES_RUN)/video

# SCA on SAM 2 for the shapes world (v3, shipped beside the default as sca-sam2-shapes), on a tiny SAM 2
# (model=sca-sam2-shapes, which hands the LM each region's stride-4/8 features pooled in its mask as one more caption
# query): stage 1 with SAM 2's high-resolution skip shut (train=shapes-sam2-model), two caption cycles on the classic
# world, one on the rich world, a shorter sharpening stage; then installed and benchmarked. 22,000 steps: about 2 hours
# on an idle 2-core Xeon with AMX, 3.5 on an AVX2-only EPYC (a step costs 3.4 times the shipped model's). Each stage is
# a file target, so a run that stops goes on where it stopped (a stage started resumes from its last checkpoint).
SAM2_RUN ?= build/shapes-sam2-model
SAM2_TRAIN = $(BIN)/sca train train.resume=latest
SAM2_AFTER = model=pretrained model.path=$(SAM2_RUN)/stage-$(1)/final
shapes-sam2-model: $(SAM2_RUN)/stage-5/final/config.json
	$(BIN)/python -m sca.assets.build model $(SAM2_RUN)/stage-5/final --name sca-sam2-shapes
	$(BIN)/sca bench quality --model sca-sam2-shapes --out $(SAM2_RUN)/quality
	$(BIN)/sca bench video --model sca-sam2-shapes --out $(SAM2_RUN)/video
$(SAM2_RUN)/stage-1/final/config.json: | $(STAMP)
	$(SAM2_TRAIN) model=sca-sam2-shapes train=shapes-sam2-model data=shapes-classic output_dir=$(SAM2_RUN)/stage-1
$(SAM2_RUN)/stage-2/final/config.json: $(SAM2_RUN)/stage-1/final/config.json
	$(SAM2_TRAIN) $(call SAM2_AFTER,1) train=shapes-captions $(CLASSIC) output_dir=$(SAM2_RUN)/stage-2
$(SAM2_RUN)/stage-3/final/config.json: $(SAM2_RUN)/stage-2/final/config.json
	$(SAM2_TRAIN) $(call SAM2_AFTER,2) train=shapes-captions $(CLASSIC) output_dir=$(SAM2_RUN)/stage-3
$(SAM2_RUN)/stage-4/final/config.json: $(SAM2_RUN)/stage-3/final/config.json
	$(SAM2_TRAIN) $(call SAM2_AFTER,3) train=shapes-captions output_dir=$(SAM2_RUN)/stage-4
$(SAM2_RUN)/stage-5/final/config.json: $(SAM2_RUN)/stage-4/final/config.json
	$(SAM2_TRAIN) $(call SAM2_AFTER,4) train=shapes-sharpen train.args.max_steps=2000 output_dir=$(SAM2_RUN)/stage-5

# The web demo's end-to-end test drives Debian's Chromium (Playwright from PyPI drives it; no browser download).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check src tests benchmarks
	HF_HUB_OFFLINE=1 SCA_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build annotated.png
