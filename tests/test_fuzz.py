"""Property-based tests of every reader: malformed documents raise only `InputError`; valid documents lose nothing.

The documents are generated (hypothesis): wrong types, missing keys, NaN and infinities, huge integers, deep
nesting, bytes that are not UTF-8, truncated files, and valid documents with one field broken. The CI profile
(conftest) fixes the seed and the number of examples.
"""

import contextlib
import json
import pickle
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sca.data.sources import load_records
from sca.errors import InputError
from sca.eval.dense import DensePrediction, DenseReference, dense_captioning_map
from sca.eval.infer_file import read_infer_file, select_candidates

WIDTH, HEIGHT = 40, 30
FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    Image.new("RGB", (WIDTH, HEIGHT), (1, 2, 3)).save(folder / "a.png")
    for name in ("VG_100K/1.jpg", "VG_100K/2.jpg", "images/1.jpg", "images/2.jpg", "train2014/x.jpg", "val/a.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (WIDTH, HEIGHT)).save(folder / name)
    (folder / "not-an-image.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return folder


# ------------------------------------------------------------------ generators

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**301),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.just(""), st.just("1234"),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(string.ascii_lowercase + "_", max_size=10), inner, max_size=4), max_leaves=12)


def boxes():
    return st.tuples(st.floats(0, WIDTH - 2), st.floats(0, HEIGHT - 2), st.floats(1, WIDTH), st.floats(1, HEIGHT)).map(
        lambda b: [round(b[0], 2), round(b[1], 2), round(min(WIDTH, b[0] + b[2]), 2) + 0.5,
                   round(min(HEIGHT, b[1] + b[3]), 2) + 0.5]).filter(
        lambda b: b[2] <= WIDTH and b[3] <= HEIGHT and b[2] > b[0] and b[3] > b[1])


captions = st.text(string.ascii_letters + " ,.'-", min_size=1, max_size=30).filter(lambda t: t.strip())


@st.composite
def broken(draw, document):
    """A valid document with one thing broken: a value replaced, a key dropped, or the whole thing garbled."""
    paths = list(_paths(document))
    kind = draw(st.sampled_from(["replace", "drop", "replace", "garble"]))
    if kind == "garble" or not paths:
        return draw(json_values)
    path = draw(st.sampled_from(paths))
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if kind == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return copy


def _paths(value, prefix=()):
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield (*prefix, key)
        yield from _paths(item, (*prefix, key))


def encodings(document):
    """Ways a file can hold a document: as JSON (NaN written as NaN), truncated, with bad bytes, deeply nested."""
    text = json.dumps(document, allow_nan=True)
    return st.sampled_from([
        text.encode(), text.encode()[: max(1, len(text) // 2)], b"\xff\xfe" + text.encode(),
        ("[" * 100_000 + "]" * 100_000).encode(), b"",
    ])


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _only_input_errors(load):
    with contextlib.suppress(InputError):
        load()


# ------------------------------------------------------------------ JSONL


@st.composite
def jsonl_lines(draw):
    regions = draw(st.lists(st.fixed_dictionaries(
        {"box": boxes(), "captions": st.lists(captions, min_size=1, max_size=3)},
        optional={"region_id": st.integers(0, 10**6)}), max_size=4))
    line = {"image": "a.png", "regions": regions}
    if draw(st.booleans()):
        line.update(width=WIDTH, height=HEIGHT)
    if draw(st.booleans()):
        line["task_type"] = draw(st.sampled_from(["caption", "recognition"]))
    return line


@FUZZ
@given(data=st.data())
def test_jsonl_malformed_lines_raise_only_input_errors(folder, data):
    good = data.draw(jsonl_lines())
    bad = data.draw(broken(good) | jsonl_lines().map(
        lambda line: {**line, "image": data.draw(st.sampled_from(["not-an-image.png", "missing.png", "../fuzz0"]))}))
    encoded = data.draw(st.just(json.dumps(bad, allow_nan=True).encode()) | encodings(bad))
    path = _write(folder / "fuzz.jsonl", json.dumps(good).encode() + b"\n" + encoded + b"\n")
    _only_input_errors(lambda: load_records({"source": "jsonl", "path": str(path)}))


@FUZZ
@given(lines=st.lists(jsonl_lines(), min_size=1, max_size=4))
def test_jsonl_valid_documents_round_trip_to_eval(folder, lines):
    path = _write(folder / "valid.jsonl", "\n".join(json.dumps(line) for line in lines).encode())
    records = load_records({"source": "jsonl", "path": str(path)})
    assert [len(r.regions) for r in records] == [len(line["regions"]) for line in lines]
    for record, line in zip(records, lines):
        for region, given_region in zip(record.regions, line["regions"]):
            assert list(region.box) == given_region["box"] and region.captions == given_region["captions"]
    entries = [{"_id": i, "split": "inference", "references": region.captions, "candidates": [region.captions[0]],
                "logits": {"iou_scores": [0.5, 0.7, 0.1]}}
               for i, region in enumerate(r for record in records for r in record.regions)]
    if not entries:
        return
    infer = _write(folder / "infer-valid.json", json.dumps(entries).encode())
    read = read_infer_file(infer)
    assert read == entries and select_candidates(read) == [e["references"][0] for e in entries]


# ------------------------------------------------------------------ COCO-style (COCO, LVIS, O365, V3Det, GRiT)


@st.composite
def coco_documents(draw, with_captions=False):
    annotations = []
    for i, box in enumerate(draw(st.lists(boxes(), min_size=1, max_size=5))):
        annotation = {"id": i, "image_id": draw(st.sampled_from([1, 2])), "category_id": 1, "iscrowd": 0,
                      "bbox": [box[0], box[1], round(box[2] - box[0], 2), round(box[3] - box[1], 2)]}
        if with_captions:
            annotation["caption"] = draw(captions)
        annotations.append(annotation)
    return {"images": [{"id": 1, "file_name": "1.jpg", "width": WIDTH, "height": HEIGHT},
                       {"id": 2, "file_name": "2.jpg", "width": WIDTH, "height": HEIGHT}],
            "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}


@FUZZ
@given(data=st.data())
def test_coco_malformed_documents_raise_only_input_errors(folder, data):
    document = data.draw(broken(data.draw(coco_documents())))
    path = _write(folder / "instances.json", data.draw(st.sampled_from([json.dumps(document, allow_nan=True).encode()]))
                  if data.draw(st.booleans()) else data.draw(encodings(document)))
    _only_input_errors(lambda: load_records({"source": "coco", "annotations": str(path),
                                             "images_dir": str(folder / "images"), "repair_regions": False}))


@FUZZ
@given(data=st.data())
def test_grit_malformed_documents_raise_only_input_errors(folder, data):
    document = data.draw(broken(data.draw(coco_documents(with_captions=True))))
    (folder / "grit").mkdir(exist_ok=True)
    _write(folder / "grit" / "test.json", json.dumps(document, allow_nan=True).encode())
    _only_input_errors(lambda: load_records({"source": "grit_visual_genome", "root": str(folder / "grit"), "split": "test",
                                             "images_dir": str(folder / "images")}))


@FUZZ
@given(document=coco_documents(with_captions=True))
def test_grit_valid_documents_keep_every_region(folder, document):
    (folder / "grit").mkdir(exist_ok=True)
    _write(folder / "grit" / "test.json", json.dumps(document).encode())
    records = load_records({"source": "grit_visual_genome", "root": str(folder / "grit"), "split": "test",
                            "images_dir": str(folder / "images")})
    kept = sorted((region.region_id, region.captions[0]) for record in records for region in record.regions)
    assert kept == sorted((a["id"], a["caption"]) for a in document["annotations"])


# ------------------------------------------------------------------ Visual Genome and RefCOCO


@FUZZ
@given(data=st.data())
def test_visual_genome_malformed_documents_raise_only_input_errors(folder, data):
    root = folder / "vg"
    (root / "VG_100K").mkdir(parents=True, exist_ok=True)
    regions = [{"id": 1, "regions": [{"region_id": 5, "image_id": 1, "phrase": "a cat", "x": 1, "y": 2, "width": 9,
                                      "height": 9}]}]
    images = [{"image_id": 1, "url": "https://x/VG_100K/1.jpg", "width": WIDTH, "height": HEIGHT}]
    splits = {"train": [1], "val": [], "test": []}
    which = data.draw(st.sampled_from(["regions", "images", "splits"]))
    documents = {"regions": regions, "images": images, "splits": splits}
    documents[which] = data.draw(broken(documents[which]))
    for name, key in (("region_descriptions.json", "regions"), ("image_data.json", "images"),
                      ("densecap_splits.json", "splits")):
        _write(root / name, json.dumps(documents[key], allow_nan=True).encode())
    _only_input_errors(lambda: load_records({"source": "visual_genome", "root": str(root), "split": "train",
                                             "skip_missing_images": True}))


@FUZZ
@given(data=st.data())
def test_refcoco_malformed_documents_raise_only_input_errors(folder, data):
    root = folder / "refer"
    (root / "refcoco").mkdir(parents=True, exist_ok=True)
    refs = [{"ref_id": 1, "ann_id": 3, "image_id": 1, "split": "val", "sentences": [{"sent": "the left cat"}]}]
    instances = {"images": [{"id": 1, "file_name": "x.jpg", "width": WIDTH, "height": HEIGHT}],
                 "annotations": [{"id": 3, "image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 1}]}
    if data.draw(st.booleans()):
        refs = data.draw(broken(refs))
        pickled = pickle.dumps(refs)
        (root / "refcoco" / "refs(unc).p").write_bytes(data.draw(st.sampled_from([pickled, pickled[: len(pickled) // 2]])))
        _write(root / "refcoco" / "instances.json", json.dumps(instances).encode())
    else:
        (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs))
        _write(root / "refcoco" / "instances.json", json.dumps(data.draw(broken(instances)), allow_nan=True).encode())
    _only_input_errors(lambda: load_records({"source": "refcoco", "root": str(root), "dataset": "refcoco",
                                             "split_by": "unc", "split": "val", "images_dir": str(folder / "train2014")}))


# ------------------------------------------------------------------ infer.json and dense-captioning files


@st.composite
def region_files(draw):
    return [{"_id": i, "split": "inference", "references": draw(st.lists(captions, min_size=1, max_size=2)),
             "candidates": draw(st.lists(st.text(max_size=10), min_size=1, max_size=3)),
             "logits": {"iou_scores": draw(st.lists(st.floats(-2, 2), min_size=3, max_size=3))}}
            for i in range(draw(st.integers(1, 3)))]


@st.composite
def dense_files(draw):
    return [{"image_id": 1,
             "predictions": [{"box": box, "caption": draw(captions), "score": draw(st.floats(0, 1))}
                             for box in draw(st.lists(boxes(), max_size=3))],
             "references": [{"box": box, "captions": [draw(captions)]} for box in draw(st.lists(boxes(), max_size=3))]}]


@FUZZ
@given(data=st.data())
def test_infer_files_malformed_raise_only_input_errors(folder, data):
    document = data.draw(broken(data.draw(st.one_of(region_files(), dense_files()))))
    path = _write(folder / "infer-fuzz.json", json.dumps(document, allow_nan=True).encode()
                  if data.draw(st.booleans()) else data.draw(encodings(document)))
    try:
        entries = read_infer_file(path)
    except InputError:
        return
    if "predictions" in entries[0]:
        images = [([DensePrediction(p["box"], p["caption"], p["score"]) for p in e["predictions"]],
                   [DenseReference(r["box"], r["captions"]) for r in e["references"]]) for e in entries]
        try:
            result = dense_captioning_map(images, meteor=lambda references, candidates: dict.fromkeys(candidates, 0.5))
        except ValueError as error:  # `sca eval` says it as an InputError
            assert "ground-truth" in str(error)
            return
        assert 0 <= result["mAP"] <= 1
    else:
        chosen = select_candidates(entries)
        assert len(chosen) == len(entries) and all(isinstance(c, str) for c in chosen)


def test_nan_scores_never_pick_a_candidate(tmp_path):
    path = _write(tmp_path / "infer-x.json", b'[{"references": ["a"], "candidates": ["x", "y", "z"], '
                  b'"logits": {"iou_scores": [NaN, 0.9, 0.1]}}]')
    with pytest.raises(InputError, match="NaN"):
        read_infer_file(path)


SEEN_IN_THE_WILD = [
    # (a JSONL line, what the one-line error says): the cases a tester found
    ({"image": "a.png", "regions": [{"box": "1234", "captions": ["a"]}]}, "regions.0.box: input should be a valid list"),
    ({"image": "a.png", "regions": [{"box": {"x": 1}, "captions": ["a"]}]}, "regions.0.box"),
    ({"image": "a.png", "regions": [{"box": [1, 2, float("nan"), 4], "captions": ["a"]}]}, "NaN is not a number"),
    ({"image": "a.png", "regions": [{"box": [1, 2, 3, float("inf")], "captions": ["a"]}]}, "Infinity is not a number"),
    ({"image": "a.png", "regions": [{"box": [1, 2, 300, 4], "captions": ["a"]}]}, "lies outside the 40x30 image"),
    ({"image": "a.png", "regions": [{"box": [5, 2, 3, 4], "captions": ["a"]}]}, "is empty: boxes need x2 > x1"),
    ({"image": "a.png", "regions": [{"box": [1, 2, 3, 4], "captions": []}]}, "captions"),
    ({"image": "a.png", "regions": [{"box": [1, 2, 3, 4], "captions": ["  "]}]}, "captions"),
    ({"image": "a.png", "regions": [{"box": [1, 2, 3, 4], "captions": ["a"], "mask": {"size": [5, 5], "counts": ""}}]},
     "mask size [5, 5] is not the image's [30, 40]"),
    ({"image": "a.png", "image_id": 1e400, "regions": []}, "Infinity is not a number"),
    ({"image": "a.png", "image_id": 1.5, "regions": []}, "image_id"),
    ({"image": "a.png", "task_type": "detection", "regions": []}, "task_type: input should be 'recognition' or 'caption'"),
    ({"image": "not-an-image.png", "regions": []}, "cannot read"),
    ({"image": "a.png", "width": 41, "height": 30, "regions": []}, "width and height say 41x30"),
]


@pytest.mark.parametrize("line, message", SEEN_IN_THE_WILD)
def test_jsonl_cases_seen_in_the_wild(folder, line, message):
    path = _write(folder / "wild.jsonl", json.dumps(line, allow_nan=True).encode() + b"\n")
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        load_records({"source": "jsonl", "path": str(path)})
    assert f"{path}:1" in str(caught.value) and "\n" not in str(caught.value)


def test_huge_integers_and_deep_nesting(folder):
    path = _write(folder / "huge.jsonl", b'{"image": "a.png", "image_id": ' + b"9" * 5000 + b', "regions": []}\n')
    with pytest.raises(InputError, match="not valid JSON"):
        load_records({"source": "jsonl", "path": str(path)})
    path = _write(folder / "deep.jsonl", b"[" * 50_000 + b"]" * 50_000 + b"\n")
    with pytest.raises(InputError, match="nested too deeply"):
        load_records({"source": "jsonl", "path": str(path)})


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 4), st.integers(1, 200), st.integers(1, 40), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_run_length_encoding_of_tensors_is_pycocotools(count, height, width, density, seed):
    """`encode_rles` (masks transposed a band of rows at a time) gives pycocotools' RLE for every mask, and decodes
    back: heights across several bands, noise of any density."""
    import numpy as np
    import torch

    from sca.masks import decode_rle, encode_rle, encode_rles

    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, height, width, generator=generator) < density
    rles = encode_rles(masks)
    assert rles == [encode_rle(mask) for mask in masks.numpy()]
    assert all(np.array_equal(decode_rle(rle), mask) for rle, mask in zip(rles, masks.numpy()))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.floats(0, 1), st.integers(0, 2**31 - 1), st.booleans(),
       st.sampled_from(["compressed", "string", "runs"]))
def test_the_box_of_an_rle_is_the_box_of_its_mask(height, width, density, seed, in_a_box, form):
    """`rle_box` reads the box from the runs (no decoding): `mask_box` of the decoded mask, empty masks included,
    for each form of counts JSON and pycocotools carry."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from sca.geometry import mask_box
    from sca.masks import encode_rle, rle_box

    rng = np.random.default_rng(seed)
    mask = rng.random((height, width)) < density
    if in_a_box:
        y, x = rng.integers(0, height), rng.integers(0, width)
        mask[:y], mask[:, :x] = False, False
    rle = encode_rle(mask)
    if form == "compressed":
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    elif form == "runs":
        runs, previous, count = [], False, 0
        for value in mask.flatten(order="F"):
            if value != previous:
                runs.append(count)
                previous, count = value, 0
            count += 1
        rle = {"size": [height, width], "counts": [*runs, count]}
        assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, height, width)).astype(bool), mask)
    assert rle_box(rle) == mask_box(mask)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.integers(1, 80), st.integers(1, 80), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_counts_strings_made_with_tensor_ops_are_pycocotools(count, height, width, density, seed):
    """`rle_counts` (the GPU's encoder, run here on the CPU) writes pycocotools' strings: noise of any density,
    so runs of every length and counts smaller and larger than the one two before (negative differences)."""
    import torch

    from sca.masks import encode_rle, rle_counts

    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, height, width, generator=generator) < density
    assert rle_counts(masks) == [encode_rle(mask)["counts"] for mask in masks.numpy()]


def test_counts_strings_of_long_runs_are_pycocotools():
    """Runs of millions of pixels need 5 groups of 5 bits; a lone pixel at either end makes runs of 0 and 1."""
    import torch

    from sca.masks import encode_rle, rle_counts

    masks = torch.zeros(4, 1500, 2100, dtype=torch.bool)
    masks[1] = True
    masks[2, 0, 0] = masks[2, -1, -1] = True
    masks[3, 700:900, 10:2000] = True
    masks[3, 1499, 5] = True
    assert rle_counts(masks) == [encode_rle(mask)["counts"] for mask in masks.numpy()]


# ------------------------------------------------------------------ model folders

DELETED = object()
config_values = st.one_of(  # sizes stay small: a broken config must not ask the test for terabytes
    st.none(), st.booleans(), st.integers(-3, 300), st.just(10**300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.just([]), st.just({}), st.lists(st.integers(-1, 8), max_size=3), st.just(DELETED))


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """The shipped model (SCA on SAM) and a tiny SCA on SAM 2, each in a folder whose config.json a test rewrites
    (the weights and tokenizer linked, not copied)."""
    from sca.assets import DEFAULT_MODEL

    from builders import save_random_tiny_sca_sam2

    made = {"sca": DEFAULT_MODEL, "sca-sam2": save_random_tiny_sca_sam2(tmp_path_factory.mktemp("sca-sam2"))}
    folders = {}
    for kind, source in made.items():
        folder = tmp_path_factory.mktemp(f"broken-{kind}")
        for file in source.iterdir():
            (folder / file.name).symlink_to(file.resolve())
        (folder / "config.json").unlink()
        folders[kind] = (folder, json.loads((source / "config.json").read_text()))
    return folders


def _key_paths(config: dict, prefix: tuple = ()):
    for key, value in config.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _key_paths(value, (*prefix, key))


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_a_broken_config_json_loads_or_is_one_line(model_folders, data):
    """A config.json with one setting changed or removed: the model loads, or loading says what is wrong in one
    line (a weight whose shape is not the config's, a field of the wrong type, weights missing)."""
    from sca.api import RegionCaptioner

    folder, config = model_folders[data.draw(st.sampled_from(sorted(model_folders)))]
    config = json.loads(json.dumps(config))
    path = data.draw(st.sampled_from(sorted(_key_paths(config))))
    value = data.draw(config_values)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))
    try:
        RegionCaptioner.from_pretrained(str(folder))
    except InputError as error:
        assert "\n" not in str(error) and str(folder) in str(error)


@settings(FUZZ, max_examples=15)
@given(content=st.one_of(st.binary(max_size=40), json_values.map(lambda value: json.dumps(value).encode())))
def test_a_config_json_that_is_no_config_is_one_line(model_folders, content):
    from sca.api import RegionCaptioner

    folder, _ = model_folders["sca"]
    (folder / "config.json").write_bytes(content)
    with pytest.raises(InputError) as error:
        RegionCaptioner.from_pretrained(str(folder))
    assert "\n" not in str(error.value)
