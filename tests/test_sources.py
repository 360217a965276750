"""Each reader parses a tiny fixture written in its dataset's published format."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from sca.data.records import TASK_CAPTION, TASK_RECOGNITION
from sca.data.sources import load_records
from sca.data.sources.shapes import ShapesWorld, all_captions
from sca.errors import InputError
from sca.geometry import mask_box
from sca.masks import decode_rle


def _image(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


@pytest.fixture()
def vg(tmp_path):
    root = tmp_path / "vg"
    _image(root / "VG_100K" / "1.jpg")
    _image(root / "VG_100K_2" / "2.jpg")
    _image(root / "VG_100K" / "3.jpg")
    (root / "densecap_splits.json").write_text(json.dumps({"train": [1, 2], "val": [], "test": [3]}))
    (root / "image_data.json").write_text(json.dumps([
        {"image_id": i, "url": f"https://cs.stanford.edu/people/rak248/{folder}/{i}.jpg", "width": 40, "height": 30}
        for i, folder in [(1, "VG_100K"), (2, "VG_100K_2"), (3, "VG_100K")]
    ]))
    (root / "region_descriptions.json").write_text(json.dumps([
        {"id": 1, "regions": [
            {"region_id": 11, "image_id": 1, "phrase": "a man wearing a Red shirt", "x": 1, "y": 2, "width": 10, "height": 5},
            {"region_id": 12, "image_id": 1, "phrase": "sky", "x": 0, "y": 0, "width": 40, "height": 8}]},
        {"id": 2, "regions": [{"region_id": 21, "image_id": 2, "phrase": "tree.", "x": 3, "y": 3, "width": 4, "height": 4}]},
        {"id": 3, "regions": [{"region_id": 31, "image_id": 3, "phrase": "dog", "x": 5, "y": 6, "width": 7, "height": 8}]},
    ]))
    return root


def test_visual_genome_by_densecap_split(vg):
    train = load_records({"source": "visual_genome", "root": str(vg), "split": "train"})
    assert [r.image_id for r in train] == [1, 2]
    assert train[1].path == vg / "VG_100K_2" / "2.jpg"
    first = train[0].regions[0]
    assert first.region_id == 11 and first.box == (1, 2, 11, 7) and first.captions == ["a man wearing a Red shirt"]
    test = load_records({"source": "visual_genome", "root": str(vg), "split": "test"})
    assert [r.image_id for r in test] == [3] and test[0].task_type == TASK_CAPTION


def test_missing_images_raise_or_are_skipped(vg):
    (vg / "VG_100K_2" / "2.jpg").unlink()
    with pytest.raises(InputError, match="2.jpg"):
        load_records({"source": "visual_genome", "root": str(vg), "split": "train"})
    kept = load_records({"source": "visual_genome", "root": str(vg), "split": "train", "skip_missing_images": True})
    assert [r.image_id for r in kept] == [1]


def test_wrong_formats_name_the_file(vg, tmp_path):
    (vg / "image_data.json").write_text("{not json")
    with pytest.raises(InputError, match="image_data.json"):
        load_records({"source": "visual_genome", "root": str(vg), "split": "train"})
    with pytest.raises(InputError, match="no such folder: .*nowhere"):
        load_records({"source": "visual_genome", "root": str(tmp_path / "nowhere"), "split": "train"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="DenseCap splits not found: looked for"):
        load_records({"source": "visual_genome", "root": str(tmp_path / "empty"), "split": "train"})
    with pytest.raises(InputError, match="is a folder, not a file"):
        load_records({"source": "jsonl", "path": str(tmp_path)})
    with pytest.raises(InputError, match="unknown dataset source"):
        load_records({"source": "imagenet"})
    with pytest.raises(InputError, match="no option 'rooot'"):
        load_records({"source": "visual_genome", "rooot": "x", "split": "train"})


@pytest.fixture()
def coco_instances(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    _image(tmp_path / "images" / "b.jpg")
    data = {
        "images": [{"id": 5, "file_name": "a.jpg", "width": 40, "height": 30},
                   {"id": 6, "file_name": "b.jpg", "width": 40, "height": 30},
                   {"id": 7, "file_name": "c.jpg", "width": 40, "height": 30}],
        "annotations": [
            {"id": 50, "image_id": 5, "bbox": [1.5, 2.25, 10.5, 4.0], "category_id": 1, "iscrowd": 0,
             "segmentation": [[1.5, 2.25, 12, 2.25, 12, 6.25, 1.5, 6.25]]},
            {"id": 51, "image_id": 5, "bbox": [0, 0, 40, 30], "category_id": 2, "iscrowd": 1},
            {"id": 60, "image_id": 6, "bbox": [3, 3, 4, 4], "category_id": 2, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "traffic light"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_instances(coco_instances):
    records = load_records({"source": "coco", "annotations": str(coco_instances),
                            "images_dir": str(coco_instances.parent / "images")})
    assert [r.image_id for r in records] == [5, 6]  # image 7 has no annotations
    assert [g.region_id for g in records[0].regions] == [50]  # the crowd annotation is skipped
    assert records[0].regions[0].box == (1.5, 2.25, 12.0, 6.25)  # floats stay floats
    assert records[1].regions[0].captions == ["traffic light"]
    assert records[0].task_type == TASK_RECOGNITION


def test_refcoco(tmp_path, coco_instances):
    folder = tmp_path / "refer" / "refcocog"
    folder.mkdir(parents=True)
    (folder / "instances.json").write_text(coco_instances.read_text())
    refs = [
        {"ref_id": 1, "ann_id": 50, "image_id": 5, "split": "val", "category_id": 1,
         "sentences": [{"sent": "the dog on the left", "tokens": [], "sent_id": 1},
                       {"sent": "a brown dog", "tokens": [], "sent_id": 2}]},
        {"ref_id": 2, "ann_id": 60, "image_id": 6, "split": "train", "category_id": 2,
         "sentences": [{"sent": "the light", "tokens": [], "sent_id": 3}]},
    ]
    with (folder / "refs(umd).p").open("wb") as handle:
        pickle.dump(refs, handle)
    spec = {"source": "refcoco", "root": str(tmp_path / "refer"), "dataset": "refcocog", "split_by": "umd",
            "images_dir": str(coco_instances.parent / "images")}
    val = load_records(spec | {"split": "val"})
    assert len(val) == 1 and val[0].image_id == 5
    region = val[0].regions[0]
    assert region.region_id == 1 and region.captions == ["the dog on the left", "a brown dog"]
    assert region.box == (1.5, 2.25, 12.0, 6.25)
    with pytest.raises(InputError, match="no refs in split 'testA'"):
        load_records(spec | {"split": "testA"})
    with pytest.raises(InputError, match="split by"):
        load_records(spec | {"split": "val", "split_by": "unc"})


def test_jsonl(tmp_path):
    _image(tmp_path / "imgs" / "x.png", size=(50, 20))
    mask = {"size": [20, 50], "counts": [100, 20, 880]}
    lines = [
        {"image": "imgs/x.png", "image_id": 9, "regions": [
            {"region_id": 7, "box": [1, 2, 30, 18], "captions": ["a thing", "an object"], "mask": mask}]},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (record,) = load_records({"source": "jsonl", "path": str(path)})
    assert (record.image_id, record.width, record.height) == (9, 50, 20)
    assert record.regions[0].captions == ["a thing", "an object"] and record.regions[0].mask == mask
    path.write_text('{"image": "imgs/x.png", "regions": [{"box": [5, 5, 1, 1]}]}\n')
    with pytest.raises(InputError, match="data.jsonl:1"):
        load_records({"source": "jsonl", "path": str(path)})
    path.write_text('{"image": "imgs/x.png"}\n')
    with pytest.raises(InputError, match="regions: a required field is missing"):
        load_records({"source": "jsonl", "path": str(path)})


def test_shapes_world_is_deterministic_with_exact_masks():
    world = ShapesWorld.split("train", image_size=96, max_shapes=3)
    first, again = world.record(4), world.record(4)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert ShapesWorld.split("test", image_size=96).record(4).image_id != first.image_id
    pixels = np.asarray(first.image)
    for region in first.regions:
        mask = decode_rle(region.mask)
        assert mask_box(mask) == list(region.box)
        assert region.captions[0] in all_captions()
        colours = np.unique(pixels[mask].reshape(-1, 3), axis=0)
        assert len(colours) == 1  # the mask is exactly the painted shape


def test_rich_shapes_world_draws_light_mid_grey_and_dark_backgrounds():
    from collections import Counter

    from sca.bench.quality import background_tone

    tones = Counter()
    for record in ShapesWorld.split("train", world="rich", max_shapes=6).records(80):
        pixels = np.asarray(record.image)
        occupied = np.zeros(pixels.shape[:2], dtype=bool)
        for region in record.regions:
            occupied |= decode_rle(region.mask)
        tones[background_tone(pixels, occupied)] += 1
        for region in record.regions:  # every captioned shape stands out from the background around it
            mask = decode_rle(region.mask)
            x1, y1, x2, y2 = (int(v) for v in region.box)
            around = np.zeros_like(mask)
            around[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = True
            around &= ~occupied
            if around.any():
                contrast = np.abs(pixels[mask].mean(0) - pixels[around].mean(0)).max()
                assert contrast > 40, (record.image_id, region.captions, contrast)
    assert set(tones) == {"light", "mid", "dark"} and tones["light"] > tones["dark"] > tones["mid"], tones
