"""The conformance matrix: every registered family, built tiny from configs and named by hub id from a cache laid
out on disk, through every front door — the Python API, `sca caption`, `sca anything`, the server's caption and
anything routes, `sca video`, `sca infer` — and one training step where the family trains. Every segmenter (SAM,
SAM-HQ, SAM 2, SAM 3's tracker) and every captioner (BLIP, BLIP-2, GIT, InstructBLIP, Florence-2, a chat VLM)
appears at least once; so does DESIGN.md's example family, run from the document's own code."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from test_hub import put_in_cache

from sca.api import RegionCaptioner
from sca.app.server import create_app
from sca.cli import main
from sca.data.sources.moving_shapes import MovingShapesWorld
from sca.models.prompts import RegionPrompt
from sca.models.registry import MODEL_KINDS
from sca.video.io import write_video

from builders import (
    build_tiny_captioner,
    build_tiny_florence2,
    build_tiny_llava,
    save_random_tiny_sca,
    save_random_tiny_sca_sam2,
    save_tiny_lm,
    tiny_sam,
    tiny_sam2,
    tiny_sam3_tracker,
    tiny_sam_hq,
)

pytestmark = pytest.mark.slow  # a matrix of model loads; each cell a second or two

TINY = {
    "sam": tiny_sam, "sam-hq": tiny_sam_hq, "sam2": tiny_sam2, "sam3-tracker": tiny_sam3_tracker,
    "blip": lambda: build_tiny_captioner("blip"), "blip-2": lambda: build_tiny_captioner("blip-2"),
    "git": lambda: build_tiny_captioner("git"), "instructblip": lambda: build_tiny_captioner("instructblip"),
    "florence-2": build_tiny_florence2, "llava": build_tiny_llava,
}
FAMILIES = {
    "sca": ("sca", {"path": "tiny/sca"}),
    "sca-sam2": ("sca", {"path": "tiny/sca-sam2"}),
    "sam+blip": ("sam-captioner", {"sam": "tiny/sam", "captioner": "tiny/blip"}),
    "sam-hq+blip-2": ("sam-captioner", {"sam": "tiny/sam-hq", "captioner": "tiny/blip-2"}),
    "sam2+git": ("sam-captioner", {"sam": "tiny/sam2", "captioner": "tiny/git"}),
    "sam3-tracker+instructblip": ("sam-captioner", {"sam": "tiny/sam3-tracker", "captioner": "tiny/instructblip",
                                                     "prompt": "describe the region"}),
    "sam+florence-2": ("sam-captioner", {"sam": "tiny/sam", "captioner": "tiny/florence-2"}),
    "sam2+llava": ("sam-captioner", {"sam": "tiny/sam2", "captioner": "tiny/llava", "candidates": "best"}),
    "design-example": ("x", {}),
}
CLI_OPTION = {"path": "--model", "sam": "--sam", "captioner": "--captioner", "prompt": "--prompt",
              "candidates": "--candidates"}
GENERATION = {"max_new_tokens": 3}
SIZE = (72, 96)  # (H, W): neither square nor any model's frame
BOX, POINT, NEGATIVE = [4, 6, 50, 40], [60, 30], [20, 20]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache on disk holding every tiny model under `tiny/NAME`; the hub is offline and reads only it."""
    cache, staging = tmp_path_factory.mktemp("hub-cache"), tmp_path_factory.mktemp("staging")
    save_random_tiny_sca(staging / "sca")
    put_in_cache(cache, "tiny/sca", staging / "sca")
    save_random_tiny_sca_sam2(staging / "sca-sam2")
    put_in_cache(cache, "tiny/sca-sam2", staging / "sca-sam2")
    save_tiny_lm(staging / "lm")
    put_in_cache(cache, "tiny/lm", staging / "lm")
    for name, build in TINY.items():
        torch.manual_seed(0)
        built = build()
        model, processor = built if isinstance(built, tuple) else (built, None)
        model.save_pretrained(staging / name)
        if processor is not None:
            processor.save_pretrained(staging / name)
        put_in_cache(cache, f"tiny/{name}", staging / name)
    with pytest.MonkeyPatch.context() as patch:
        import huggingface_hub.constants as constants

        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        patch.setitem(MODEL_KINDS, "x", _design_example_family())
        yield cache


def _design_example_family():
    """DESIGN.md's example family, from the document's own code block."""
    design = (Path(__file__).parent.parent / "DESIGN.md").read_text()
    code = re.search(r"For example, a family that captions every region.*?```python\n(.*?)```", design, re.S).group(1)
    namespace = {"MODEL_KINDS": {}}
    exec(compile(code, "DESIGN.md", "exec"), namespace)
    return namespace["MODEL_KINDS"]["x"]


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    pixels = np.full((*SIZE, 3), 230, dtype=np.uint8)
    pixels[8:38, 6:48] = (200, 30, 30)
    pixels[20:60, 55:90] = (30, 30, 200)
    pixels += rng.integers(0, 10, pixels.shape, dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def files(tmp_path_factory, picture):
    folder = tmp_path_factory.mktemp("conformance")
    picture.save(folder / "image.png")
    frames = MovingShapesWorld.split("test", frames=4, image_size=64).video(0)
    write_video(folder / "clip.mp4", [frame.image for frame in frames], fps=4)
    return folder


def _cli(family) -> list[str]:
    kind, options = FAMILIES[family]
    args = ["--kind", kind, "--max-new-tokens", "3"]
    for key, value in options.items():
        args += [CLI_OPTION[key], value]
    return args


@pytest.fixture(scope="module")
def captioners(hub):
    return {}


def _captioner(captioners, family) -> RegionCaptioner:
    if family not in captioners:
        kind, options = FAMILIES[family]
        captioners[family] = RegionCaptioner.from_pretrained(kind=kind, chunk_size=2, **GENERATION, **options)
    return captioners[family]


def _check(regions, count, size=SIZE):
    assert len(regions) == count
    for region in regions:
        record = region.to_dict()
        assert isinstance(record["caption"], str) and record["mask"]["size"] == list(size)
        assert len(record["iou_scores"]) == len(region.mask_rles) and all(np.isfinite(record["iou_scores"]))
        json.dumps(record, allow_nan=False)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_python_api(captioners, picture, family):
    captioner = _captioner(captioners, family)
    captioner.set_image(picture)
    _check(captioner.caption(boxes=[BOX, [0, 0, 96, 72]]), 2)
    _check(captioner.caption(points=[POINT]), 1)
    pair = captioner.caption(points=[[POINT, NEGATIVE]], point_labels=[[1, 0]])
    _check(pair, 1)
    assert pair[0].prompt["point_labels"] == [1, 0]
    mask = np.zeros(SIZE, dtype=bool)
    mask[8:38, 6:48] = True
    if "masks" in captioner.model.prompt_kinds:
        _check(captioner.caption(masks=mask[None]), 1)
        _check(captioner.caption(boxes=[BOX], masks=mask[None]), 1)
    mixed = captioner.caption_regions([RegionPrompt(box=BOX), RegionPrompt(points=[POINT, NEGATIVE], point_labels=[1, 0]),
                                       RegionPrompt(points=[POINT]), RegionPrompt(mask=mask)])
    _check(mixed, 4)
    assert [sorted(r.prompt) for r in mixed] == [["box"], ["point_labels", "points"], ["point_labels", "points"], ["mask"]]
    alone = captioner.caption(boxes=[BOX])[0]
    assert mixed[0].caption == alone.caption and mixed[0].iou_scores == pytest.approx(alone.iou_scores, abs=1e-5)
    from sca.options import AnythingOptions

    found = captioner.anything(AnythingOptions(points_per_side=4, pred_iou_thresh=-10, stability_score_thresh=-10,
                                               max_masks=3))
    _check(found, len(found))
    assert all(r.stability_score is not None for r in found)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sca_caption_and_anything(hub, files, capsys, family):
    image = str(files / "image.png")
    args = ["caption", image, "--box", ",".join(map(str, BOX)), "--point", ",".join(map(str, POINT)), "--json"]
    assert main(args + _cli(family)) == 0, capsys.readouterr().err
    regions = json.loads(capsys.readouterr().out)["regions"]
    assert [sorted(r["prompt"]) for r in regions] == [["box"], ["point_labels", "points"]]
    assert main(["anything", image, "--points-per-side", "4", "--pred-iou-thresh", "-10", "--stability-thresh", "-10",
                 "--max-masks", "2", "--json"] + _cli(family)) == 0, capsys.readouterr().err
    found = json.loads(capsys.readouterr().out)["regions"]
    assert len(found) <= 2 and all(r["stability_score"] is not None for r in found)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_server(captioners, files, family):
    captioner = _captioner(captioners, family)
    with TestClient(create_app(captioner.model, FAMILIES[family][0], chunk_size=2)) as client:
        data = (files / "image.png").read_bytes()
        image = client.post("/api/images", content=data, headers={"Content-Type": "image/png"}).json()["image"]
        regions = [{"box": BOX}, {"points": [POINT, NEGATIVE], "point_labels": [1, 0]}, {"points": [POINT]},
                   {"box": BOX, "points": [POINT]}]
        answer = client.post("/api/caption", json={"image": image, "regions": regions})
        assert answer.status_code == 200, answer.text
        results = answer.json()["regions"]
        assert [r["prompt"].get("box") for r in results] == [BOX, None, None, BOX]
        assert all(r["mask"]["size"] == list(SIZE) for r in results)
        answer = client.post("/api/anything", json={"image": image, "points_per_side": 4, "pred_iou_thresh": -10,
                                                    "stability_score_thresh": -10, "max_masks": 2})
        assert answer.status_code == 200, answer.text
        assert all(r["stability_score"] is not None for r in answer.json()["regions"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sca_video_and_sca_infer(hub, files, tmp_path, capsys, family):
    out = tmp_path / "tracks.json"
    assert main(["video", str(files / "clip.mp4"), "--box", "2,2,40,40", "--point", "40,40", "--json", str(out),
                 "--quiet"] + _cli(family)) == 0, capsys.readouterr().err
    objects = json.loads(out.read_text())["objects"]
    assert len(objects) == 2 and all(isinstance(o["caption"], str) for o in objects)

    kind, options = FAMILIES[family]
    group = ["model=sam-captioner"] if kind == "sam-captioner" else [f"model.kind={kind}"]
    overrides = group + [f"model.{key}={value}" for key, value in options.items()]
    assert main(["infer", *overrides, f"output_dir={tmp_path}", "infer.max_images=1", "infer.max_new_tokens=3"]) == 0
    entries = json.loads((tmp_path / "infer" / "infer-shapes-val.json").read_text())
    assert entries and all(len(e["logits"]["iou_scores"]) == 3 for e in entries)


@pytest.mark.parametrize("family", ["sca", "sca-sam2"])
def test_one_training_step_of_the_trainable_families(hub, tmp_path, family):
    from sca.models.registry import model_kinds

    trainable = {family for family, (kind, _) in FAMILIES.items() if model_kinds()[kind].trainable}
    assert trainable == {"sca", "sca-sam2"}
    out = tmp_path / "train"
    assert main(["train", "model=pretrained", f"model.path=tiny/{family}", "train=shapes", f"output_dir={out}",
                 "data.train.0.num_images=4", "data.eval.num_images=2", "train.max_eval_samples=2",
                 "train.args.max_steps=1", "train.args.per_device_train_batch_size=2", "train.args.save_steps=1",
                 "train.args.eval_steps=1", "train.args.logging_steps=1"]) == 0
    model_type = json.loads((out / "final" / "config.json").read_text())["model_type"]
    assert model_type == {"sca": "sca", "sca-sam2": "sca_sam2"}[family]


def test_sca_on_sam2_from_a_sam2_checkpoint_and_an_lm_by_hub_id(hub):
    from transformers import Sam2Model

    from sca.models.registry import build_region_model

    built = build_region_model("sca-sam2", {"sam2": "tiny/sam2", "lm": "tiny/lm", "mixer_layers": 1})
    sam2 = Sam2Model.from_pretrained(next(Path(hub).glob("models--tiny--sam2/snapshots/*")))
    for name, weight in sam2.state_dict().items():
        assert torch.equal(built.model.sam.state_dict()[name], weight), name
    assert len(built.model.mixer.layers) == 1 and built.frame.image_size == sam2.config.prompt_encoder_config.image_size
    assert built.model.language_model.config.n_embd == built.model.language_project.out_features
    trainable = {name.split(".")[0] for name, p in built.model.named_parameters() if p.requires_grad}
    assert trainable == {"mixer", "caption_tokens", "task_tokens", "language_project"}
    from sca.errors import InputError

    with pytest.raises(InputError, match="is a 'sam' model, not SAM 2"):  # transformers would load it, weights random
        build_region_model("sca-sam2", {"sam2": "tiny/sam", "lm": "tiny/lm"})
    for kind, options in (("sca-sam2", {"sam2": "tiny/sam2", "lm": "tiny/sam"}),
                          ("sca-from-sam-and-lm", {"sam": "tiny/sam", "lm": "tiny/sam2"})):
        with pytest.raises(InputError, match="or the LM for"):  # a segmenter given as the LM
            build_region_model(kind, options)


def test_a_checkpoint_in_the_wrong_role_is_named(hub, files, capsys):
    image = str(files / "image.png")
    assert main(["caption", image, "--box", "1,1,9,9", "--sam", "tiny/sam", "--captioner", "tiny/sam2"]) == 2
    assert "is a segmenter (sam2)" in capsys.readouterr().err
    assert main(["caption", image, "--box", "1,1,9,9", "--sam", "tiny/blip", "--captioner", "tiny/git"]) == 2
    err = capsys.readouterr().err
    assert "'blip' model, not a segmenter" in err and "--captioner" in err and "Traceback" not in err


def test_any_builder_option_through_model_option(hub, files, capsys):
    image = str(files / "image.png")
    args = ["caption", image, "--box", "1,1,9,9", "--sam", "tiny/sam", "--captioner", "tiny/blip", "--json"]
    assert main(args + ["--model-option", "batch_size=1", "--model-option", "candidates=best"]) == 0
    assert len(json.loads(capsys.readouterr().out)["regions"][0]["candidates"]) == 1
    assert main(args + ["--model-option", "no_such=1"]) == 2
    assert "take no option 'no_such'; they take sam, captioner" in capsys.readouterr().err
    assert main(args + ["--model-option", "batch_size=many"]) == 2
    assert "batch_size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main(args + ["--model-option", "oops"])
    assert exit.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_instructblip_by_hub_id_reads_its_own_qformer_tokenizer(captioners, hub):
    captioner = _captioner(captioners, "sam3-tracker+instructblip")
    processor = captioner.model.captioner.processor
    folder = next(Path(hub).glob("models--tiny--instructblip/snapshots/*"))
    expected = json.loads((folder / "qformer_tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert processor.qformer_tokenizer.get_vocab() == expected


def test_mask_prompts_follow_the_family_declaration(captioners, picture):
    """SAM's family takes mask prompts one region at a time; the result equals the region alone."""
    captioner = _captioner(captioners, "sam+blip")
    captioner.set_image(picture)
    masks = np.zeros((2, *SIZE), dtype=bool)
    masks[0, 8:38, 6:48] = masks[1, 20:60, 55:90] = True
    together = captioner.caption(masks=masks)
    for mask, region in zip(masks, together):
        alone = captioner.caption(masks=mask[None])[0]
        assert region.iou_scores == pytest.approx(alone.iou_scores, abs=1e-5)


def test_a_processor_transformers_cannot_use_is_one_line_naming_the_file(hub, files, tmp_path, capsys):
    import shutil

    folder = tmp_path / "florence-2"
    shutil.copytree(next(Path(hub).glob("models--tiny--florence-2/snapshots/*")), folder)
    config = json.loads((folder / "processor_config.json").read_text())
    config.pop("post_processor_config")
    (folder / "processor_config.json").write_text(json.dumps(config))
    assert main(["caption", str(files / "image.png"), "--box", "1,1,9,9", "--sam", "tiny/sam", "--captioner",
                 str(folder)]) == 2
    err = capsys.readouterr().err
    assert "processor_config.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
