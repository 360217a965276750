import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch
from hypothesis import settings

from sca.models import ScaModel
from sca.models.tiny import (
    build_bpe_tokenizer,
    build_sentencepiece_tokenizer,
    tiny_sca_config,
    tiny_text_config,
)

from builders import SHAPE_PHRASES

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "sca-reference-tiny"

torch.set_num_threads(min(2, torch.get_num_threads()))

# Property-based tests: a fixed seed and a bounded number of examples, so CI is repeatable and fast;
# HYPOTHESIS_PROFILE=explore searches further with fresh examples.
settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer(SHAPE_PHRASES, vocab_size=300)


@pytest.fixture(scope="session")
def sentencepiece_tokenizer():
    return build_sentencepiece_tokenizer(SHAPE_PHRASES, vocab_size=64)


def make_tiny_model(tokenizer, kind: str = "gpt2", seed: int = 0, spread: bool = True, **config) -> ScaModel:
    torch.manual_seed(seed)
    model = ScaModel(tiny_sca_config(tiny_text_config(tokenizer, kind), **config))
    if not spread:
        return model.eval()
    # Random init makes SAM's IoU head and the LM nearly constant; spread weights so outputs differ by input.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim >= 2 and not name.startswith("vision_encoder.pos_embed"):
                parameter.normal_(0, 0.3 if name.startswith("language_model") else 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model(bpe_tokenizer) -> ScaModel:
    return make_tiny_model(bpe_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, bpe_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny-sca")
    tiny_model.save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    return folder
