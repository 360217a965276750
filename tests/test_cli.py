import json
import subprocess
import sys

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

    assert PRECISIONS == tuple(DTYPES)
