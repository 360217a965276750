"""Models named by hub id, against a Hugging Face cache laid out on disk, with the network off: the commands a user
would type (`--model org/name`, `--captioner org/name --sam org/name`), run as they would run them."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from sca.assets import SAMPLE_IMAGE

from builders import build_tiny_captioner, tiny_sam

pytestmark = pytest.mark.slow  # each case starts a Python process that loads torch and transformers

SCA_REPO = "xk-huang/segment-caption-anything-gpt2_large-vg"


def put_in_cache(cache, repo_id, files, revision="main"):
    """Lay `files` (a folder) out as the hub cache does: `models--org--name/snapshots/<commit>/`, `refs/<revision>`."""
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(files, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, reference_dir):
    """An SCA checkpoint in the original's format (no tokenizer; its LM recorded as gpt2-large), the tokenizer under
    the LM's name, and a SAM and a BLIP for the baseline."""
    cache = tmp_path_factory.mktemp("hub-cache")
    staging = tmp_path_factory.mktemp("staging")
    checkpoint = staging / "sca"
    shutil.copytree(reference_dir / "model", checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["text_config"]["_name_or_path"] = "gpt2-large"
    (checkpoint / "config.json").write_text(json.dumps(config))
    put_in_cache(cache, SCA_REPO, checkpoint)
    put_in_cache(cache, SCA_REPO, checkpoint, revision="v1.0")
    shutil.copytree(reference_dir / "tokenizer", staging / "gpt2-large")
    (staging / "gpt2-large" / "config.json").write_text(json.dumps(config["text_config"]))
    put_in_cache(cache, "gpt2-large", staging / "gpt2-large")
    torch.manual_seed(0)
    tiny_sam().save_pretrained(staging / "sam")
    put_in_cache(cache, "facebook/sam-vit-tiny", staging / "sam")
    model, processor = build_tiny_captioner("blip")
    model.save_pretrained(staging / "blip")
    processor.save_pretrained(staging / "blip")
    put_in_cache(cache, "Salesforce/blip-tiny", staging / "blip")
    return cache


def run(args, cache, offline=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"), TOKENIZERS_PARALLELISM="false")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "sca", *args], capture_output=True, text=True, env=env, timeout=300)


def test_sca_checkpoint_by_hub_id(hub_cache):
    done = run(["caption", str(SAMPLE_IMAGE), "--model", SCA_REPO, "--box", "35,97,73,135", "--point", "60,80",
                "--max-new-tokens", "4"], hub_cache)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("box=35,97,73,135")


def test_a_revision_and_the_python_api(hub_cache):
    done = run(["caption", str(SAMPLE_IMAGE), "--model", f"{SCA_REPO}@v1.0", "--box", "1,2,30,40", "--json"], hub_cache)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["regions"]) == 1
    code = (f"from sca.api import RegionCaptioner; from sca.models import ScaModel; "
            f"c = RegionCaptioner.from_pretrained('{SCA_REPO}', max_new_tokens=3); c.set_image('{SAMPLE_IMAGE}'); "
            f"print(len(c.caption(boxes=[[1, 2, 30, 40]]))); "
            f"print(type(ScaModel.from_pretrained('{SCA_REPO}@v1.0')).__name__)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {
        "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "ScaModel"]


def test_the_baseline_by_hub_ids(hub_cache):
    done = run(["caption", str(SAMPLE_IMAGE), "--captioner", "Salesforce/blip-tiny", "--sam", "facebook/sam-vit-tiny",
                "--box", "35,97,73,135", "--max-new-tokens", "3", "--json"], hub_cache)
    assert done.returncode == 0, done.stderr
    (region,) = json.loads(done.stdout)["regions"]
    assert len(region["candidates"]) == 3 and len(region["iou_scores"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--model", "nobody/nothing"], "no snapshot of the hub model 'nobody/nothing'"),
    (["--model", f"{SCA_REPO}@v9"], "at revision 'v9'"),
    (["--model", "no/such/folder"], "model folder not found: no/such/folder"),
    (["--captioner", "nobody/blip", "--sam", "facebook/sam-vit-tiny"], "no snapshot of the hub model 'nobody/blip'"),
])
def test_names_neither_folder_nor_cached_give_one_line(hub_cache, args, message):
    done = run(["caption", str(SAMPLE_IMAGE), "--box", "1,2,30,40", *args], hub_cache)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
