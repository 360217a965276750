import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from sca.assets import SAMPLE_IMAGE
from sca.cli import main

BOXES = ["--box", "35,97,73,135", "--box", "89,137,158,206", "--box", "156,26,238,98"]


def test_caption_prints_a_line_per_region_and_writes_the_picture(tiny_model_dir, tmp_path):
    out = tmp_path / "annotated.png"
    result = subprocess.run(
        [sys.executable, "-m", "sca", "caption", str(SAMPLE_IMAGE), "--model", str(tiny_model_dir), *BOXES,
         "--point", "60,80", "--out", str(out), "--max-new-tokens", "5"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("1\t") and "iou=" in lines[0] and lines[0].endswith("box=35,97,73,135")
    with Image.open(SAMPLE_IMAGE) as original, Image.open(out) as picture:
        assert picture.size == original.size
        changed = np.abs(np.asarray(picture, dtype=int) - np.asarray(original.convert("RGB"), dtype=int)).sum(-1) > 0
    # The first box's outline is drawn where the box is.
    assert changed[97:136, 35].mean() > 0.9


def test_json_output(tiny_model_dir, capsys):
    assert main(["caption", str(SAMPLE_IMAGE), "--model", str(tiny_model_dir), *BOXES, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["regions"]) == 3
    region = record["regions"][2]
    assert region["box"] == [156, 26, 238, 98] and len(region["iou_scores"]) == 3
    assert {"caption", "best_iou", "mask", "mask_box", "prompt"} <= region.keys()


def _error_of(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(args))
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["caption", "missing.png", "--box", "0,0,5,5"], "image not found"),
        (["caption", str(SAMPLE_IMAGE)], "no prompt"),
        (["caption", str(SAMPLE_IMAGE), "--box", "0,0,999,10"], "outside"),
        (["caption", str(SAMPLE_IMAGE), "--box", "50,0,10,10"], "inverted"),
        (["caption", str(SAMPLE_IMAGE), "--box", "1,2,3"], "4 comma-separated numbers"),
        (["caption", str(SAMPLE_IMAGE), "--point", "a,b"], "2 comma-separated numbers"),
        (["caption", str(SAMPLE_IMAGE), "--box", "0,0,5,5", "--beams", "0"], "at least 1"),
    ],
)
def test_bad_input_is_one_line(tiny_model_dir, capsys, args, message):
    assert message in _error_of(args + ["--model", str(tiny_model_dir)], capsys)


def test_unreadable_image_and_bad_models(tmp_path, tiny_model_dir, capsys):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    assert "cannot read" in _error_of(["caption", str(not_an_image), "--box", "0,0,1,1", "--model", str(tiny_model_dir)], capsys)
    args = ["caption", str(SAMPLE_IMAGE), "--box", "0,0,5,5", "--model"]
    assert "model folder not found" in _error_of(args + [str(tmp_path / "nope")], capsys)
    assert "not a model folder" in _error_of(args + [str(tmp_path)], capsys)


def test_failed_run_leaves_no_output_file(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out.png"
    _error_of(["caption", str(SAMPLE_IMAGE), "--box", "0,0,999,10", "--model", str(tiny_model_dir), "--out", str(out)], capsys)
    assert list(tmp_path.iterdir()) == []


def test_command_line_precisions_are_the_models():
    from sca.cli import PRECISIONS
    from sca.models.loading import DTYPES

    assert tuple(DTYPES) == PRECISIONS


def _bad_jsonl(tmp_path):
    """A dataset whose second image is not an image: read by a data-loader worker."""
    (tmp_path / "ok.png").write_bytes(SAMPLE_IMAGE.read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    lines = [{"image": name, "width": 256, "height": 256,
              "regions": [{"box": [10, 10, 60, 60], "captions": ["a shape"]}]} for name in ("ok.png", "broken.png")]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    return tmp_path / "data.jsonl"


FIRST_CONTACT = [
    # (what a user typed, what the one line says)
    (["caption", "{image}", "--box", "0,0,5,5", "--device", "cuda"], "sees no CUDA GPU"),
    (["caption", "{image}", "--box", "0,0,5,5", "--device", "nonsense"], "unknown device 'nonsense'"),
    (["caption", "{image}", "--box", "-10,-10,50,50"], "lies outside the 256x256 image"),
    (["caption", "{image}", "--point", "-3,4"], "lies outside the 256x256 image"),
    (["caption", "{image}", "--box", "0,0,5,5", "--out", "{tmp}/x.txt"], "must end in .png or .jpg"),
    (["caption", "{image}", "--box", "0,0,5,5", "--out", "{tmp}"], "is a folder"),
    (["caption", "{image}", "--box", "0,0,5,5", "--out", "{tmp}/no/such/x.png"], "does not exist"),
    (["caption", "{tmp}", "--box", "0,0,5,5"], "is a folder, not an image"),
    (["anything", "{image}", "--points-per-side", "100000"], "points_per_side must be at most 256"),
    (["anything", "{image}", "--points-per-side", "0"], "points_per_side must be"),
    (["infer", "infer.split=bogus", "output_dir={tmp}"], "shapes split must be one of train, val, test"),
    (["infer", "infer.num_workers=1", "data=jsonl", "data.eval_file={jsonl}", "output_dir={tmp}"],
     "cannot read {tmp}/broken.png as an image"),
    (["infer", "data=jsonl", "output_dir={tmp}"], "set data.train_file=PATH"),
    (["infer", "infer.batch_size=abc", "output_dir={tmp}"], "infer.batch_size must be at least 1"),
    (["train", "train.args.max_steps=abc", "output_dir={tmp}"], "train.args.max_steps must be a number, got 'abc'"),
    (["train", "train.args.nonsense=1", "output_dir={tmp}"], "use +train.args.nonsense=1"),
    (["train", "+train.args.nonsense=1", "output_dir={tmp}"], "train.args has no option 'nonsense'"),
    (["train", "data.foo=1"], "To append to your config use +data.foo=1"),
    (["train", "data=bogus"], "Available options in 'data': coco-instances, jsonl"),
    (["eval", "{tmp}/missing.json"], "no such file"),
]


@pytest.mark.parametrize("args, message", FIRST_CONTACT, ids=[" ".join(a[:1] + a[2:4]) for a, _ in FIRST_CONTACT])
def test_first_contact_mistakes_are_one_line(tmp_path, capsys, args, message):
    values = {"image": str(SAMPLE_IMAGE), "tmp": str(tmp_path), "jsonl": str(_bad_jsonl(tmp_path))}
    args = [a.format(**values) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message.format(**values) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not list(tmp_path.glob("**/infer-*.json"))


def test_an_image_past_the_pixel_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 256 * 100)
    assert "larger than 0 megapixels" in _error_of(["caption", str(SAMPLE_IMAGE), "--box", "0,0,5,5"], capsys)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 1.5, 4.0])
def test_ctrl_c_early_in_infer_is_one_line(tmp_path, delay):
    process = subprocess.Popen([sys.executable, "-m", "sca", "infer", f"output_dir={tmp_path}", "infer.max_images=3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    if process.returncode != 0:  # it may have finished before the signal; else 130, or ended by the signal itself
        assert process.returncode in (130, -signal.SIGINT)
        assert err.strip().endswith("interrupted") or process.returncode == -signal.SIGINT


def test_the_command_line_takes_what_the_api_takes(tiny_model_dir, tmp_path, capsys):
    """Several points per region with labels, a box and points together, mask prompts from a PNG and from COCO RLE
    JSON: each region as the API makes it."""
    from sca.api import RegionCaptioner
    from sca.masks import encode_rle

    mask = np.zeros((256, 256), bool)
    mask[97:135, 35:73] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    (tmp_path / "mask.json").write_text(json.dumps(encode_rle(mask)))
    args = ["caption", str(SAMPLE_IMAGE), "--model", str(tiny_model_dir), "--json", "--max-new-tokens", "4",
            "--point", "123,171", "--negative", "200,180", "--negative", "20,20",
            "--region", "box=35,97,73,135;point=50,110;negative=90,90",
            "--mask", str(tmp_path / "mask.png"), "--mask", str(tmp_path / "mask.json")]
    assert main(args) == 0
    regions = json.loads(capsys.readouterr().out)["regions"]
    assert regions[0]["prompt"] == {"points": [[123, 171], [200, 180], [20, 20]], "point_labels": [1, 0, 0]}
    assert regions[1]["prompt"]["box"] == [35, 97, 73, 135] and regions[1]["prompt"]["point_labels"] == [1, 0]
    assert regions[2]["prompt"] == regions[3]["prompt"] == {"mask": True}
    captioner = RegionCaptioner.from_pretrained(tiny_model_dir, max_new_tokens=4)
    captioner.set_image(SAMPLE_IMAGE)
    alone = captioner.caption(points=[[[123, 171], [200, 180], [20, 20]]], point_labels=[[1, 0, 0]])[0]
    assert regions[0]["caption"] == alone.caption and regions[0]["iou_scores"] == [round(s, 6) for s in alone.iou_scores]
    assert regions[2]["iou_scores"] == regions[3]["iou_scores"]


@pytest.mark.parametrize("extra, message", [
    (["--negative", "1,1"], "adds a background point to the region before it"),
    (["--mask", "nowhere.png"], "mask file not found"),
    (["--mask", "."], "is a folder, not a mask file"),
    (["--region", "box=1,2,3"], "box must be 4"),
    (["--region", "nose=1,2"], "--region takes box="),
])
def test_prompt_mistakes_are_one_line(tiny_model_dir, capsys, extra, message):
    try:
        code = main(["caption", str(SAMPLE_IMAGE), "--model", str(tiny_model_dir), *extra])
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0], error


def test_an_empty_mask_is_flagged_and_the_shipped_model_refuses_mask_prompts(tmp_path, capsys):
    assert main(["caption", str(SAMPLE_IMAGE), "--point", "5,5", "--point", "123,171"]) == 0  # the shipped model
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].endswith("empty mask") and not lines[1].endswith("empty mask")
    assert "region 1: the segmenter found nothing" in captured.err
    mask = np.zeros((256, 256), np.uint8)
    mask[97:135, 35:73] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["caption", str(SAMPLE_IMAGE), "--mask", str(tmp_path / "mask.png")]) == 2
    assert "not masks" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--max-json-mb", "nan"], "--max-json-mb must be a positive number"),
    (["--max-upload-mb", "inf"], "--max-upload-mb must be a positive number"),
    (["--max-megapixels", "0"], "--max-megapixels must be a positive number"),
    (["--max-video-megapixels", "-1"], "--max-video-megapixels must be a positive number"),
    (["--header-timeout", "nan"], "--header-timeout must be positive"),
    (["--max-idle-connections", "0"], "--max-idle-connections"),
])
def test_serve_refuses_bad_limits_in_one_line_before_loading(capsys, extra, message):
    assert main(["serve", *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error


@pytest.mark.parametrize("tracker, message", [("{model}", "not one with a video tracker"),
                                              ("{missing}", "model folder not found")])
def test_serve_refuses_a_tracker_that_is_not_a_video_model_before_listening(tiny_model_dir, tmp_path, capsys,
                                                                            tracker, message):
    tracker = tracker.format(model=tiny_model_dir, missing=tmp_path / "nothing-here")
    assert main(["serve", "--model", str(tiny_model_dir), "--tracker", tracker, "--port", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
