"""The published dataset layouts work with `data.root` alone, through `sca infer` as a user runs it, and `sca eval`
tells the runs apart."""

import csv
import json

import pytest
from PIL import Image

from sca.cli import main

pytestmark = pytest.mark.slow  # each case runs the shipped model over a few images


def _image(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 40)).save(path)


def _infer(tmp_path, *overrides):
    output = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    assert main(["infer", f"output_dir={output}", "infer.max_new_tokens=3", *overrides]) == 0
    (path,) = (output / "infer").glob("infer-*.json")
    return path, json.loads(path.read_text())


def test_visual_genome_with_annotations_folder(tmp_path):
    """The original project's layout: annotations/ beside VG_100K/ and VG_100K_2/."""
    root = tmp_path / "visual_genome"
    _image(root / "VG_100K" / "1.jpg", (60, 40))
    _image(root / "VG_100K_2" / "2.jpg", (50, 50))
    annotations = root / "annotations"
    annotations.mkdir()
    (annotations / "densecap_splits.json").write_text(json.dumps({"train": [], "val": [], "test": [1, 2]}))
    (annotations / "image_data.json").write_text(json.dumps([
        {"image_id": 1, "url": "https://cs.stanford.edu/people/rak248/VG_100K/1.jpg", "width": 60, "height": 40},
        {"image_id": 2, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/2.jpg", "width": 50, "height": 50}]))
    (annotations / "region_descriptions.json").write_text(json.dumps([
        {"id": 1, "regions": [
            {"region_id": 11, "image_id": 1, "phrase": "a red wall", "x": 1, "y": 2, "width": 30, "height": 20},
            {"region_id": 12, "image_id": 1, "phrase": "past the edge", "x": 40, "y": 0, "width": 30, "height": 20}]},
        {"id": 2, "regions": [
            {"region_id": 21, "image_id": 2, "phrase": "the floor", "x": 0, "y": 30, "width": 50, "height": 20}]}]))
    path, entries = _infer(tmp_path, "data=vg-densecap", f"data.root={root}")
    assert path.name == "infer-vg-densecap-test.json"
    assert [e["references"] for e in entries] == [["a red wall"], ["past the edge"], ["the floor"]]
    assert entries[1]["metadata"]["metadata_input_boxes"] == [40, 0, 60, 20]  # clipped to the image


def test_coco_tree_as_the_readme_draws_it(tmp_path):
    root = tmp_path / "coco"
    for split, names in (("val2017", ["a.jpg", "b.jpg"]), ("train2017", ["c.jpg"])):
        for name in names:
            _image(root / split / name, (64, 48))
        images = [{"id": i, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names, 1)]
        annotations = [{"id": 10 * i + k, "image_id": i, "bbox": [2 + k, 3, 20, 15], "category_id": 1 + k, "iscrowd": 0}
                       for i in range(1, len(names) + 1) for k in range(2)]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps({
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    path, entries = _infer(tmp_path, "data=coco-instances", f"data.root={root}")
    assert path.name == "infer-coco-instances-val2017.json"
    assert len(entries) == 4 and [e["references"] for e in entries[:2]] == [["cat"], ["dog"]]
    path, entries = _infer(tmp_path, "data=coco-instances", f"data.root={root}", "infer.split=train2017")
    assert path.name == "infer-coco-instances-train2017.json" and len(entries) == 2


def test_grit_visual_genome_test_json(tmp_path):
    root = tmp_path / "vg"
    _image(root / "images" / "7.jpg", (80, 60))
    _image(root / "images" / "8.jpg", (80, 60))
    (root / "annotations").mkdir()
    (root / "annotations" / "test.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "7.jpg", "width": 80, "height": 60},
                   {"id": 8, "file_name": "8.jpg", "width": 80, "height": 60}],
        "annotations": [{"id": 1, "image_id": 7, "bbox": [1, 1, 30, 20], "caption": "a man riding a horse"},
                        {"id": 2, "image_id": 7, "bbox": [40, 10, 30, 40], "caption": "green grass"},
                        {"id": 3, "image_id": 8, "bbox": [5, 5, 10, 10], "caption": "a small sign"}],
        "categories": [{"id": 1, "name": "object"}]}))
    path, entries = _infer(tmp_path, "data=vg-grit", f"data.root={root}")
    assert path.name == "infer-vg-grit-test.json"
    assert [e["references"] for e in entries] == [["a man riding a horse"], ["green grass"], ["a small sign"]]
    assert [e["metadata"]["metadata_image_id"] for e in entries] == [7, 7, 8]


def test_eval_tells_two_runs_of_one_split_apart(tmp_path, capsys):
    entry = {"_id": 0, "split": "inference", "references": ["a red circle"], "candidates": ["a red circle"]}
    files = []
    for run in ("beams=1", "beams=3"):
        path = tmp_path / "sweep" / run / "infer" / "infer-shapes-val.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps([entry]))
        files.append(str(path))
    assert main(["eval", *files, "--out", str(tmp_path / "table")]) == 0
    rows = list(csv.DictReader((tmp_path / "table" / "metrics.csv").open()))
    assert [(r["run"], r["dataset"], r["split"]) for r in rows] == [("beams=1", "shapes", "val"), ("beams=3", "shapes", "val")]
    assert main(["eval", *files, "--out", str(tmp_path / "named"), "--names", "greedy,beam search"]) == 0
    rows = list(csv.DictReader((tmp_path / "named" / "metrics.csv").open()))
    assert [r["run"] for r in rows] == ["greedy", "beam search"]
    capsys.readouterr()
    assert main(["eval", *files, "--names", "only-one"]) == 2
    assert "one per file" in capsys.readouterr().err
