"""`sca infer`: infer.json in the original schema, resumable, and the same from 1 or 2 processes."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from sca.cli import main
from sca.data.records import ImageRecord
from sca.data.sources import load_records
from sca.errors import InputError
from sca.infer.predictor import RegionPrediction, RegionPredictor
from sca.infer.runner import run_inference
from sca.models.sca_region import ScaRegionModel
from sca.options import GenerationOptions

SHAPES = {"source": "shapes", "split": "val", "num_images": 6, "image_size": 128, "min_shapes": 1, "max_shapes": 3}


@pytest.fixture(scope="module")
def records():
    records = load_records(SHAPES)
    first = records[0]
    # An image without regions in the middle: it must add no entry and shift no other image's entries.
    empty = ImageRecord(image_id=424242, path=None, width=first.width, height=first.height, regions=[], image=first.image)
    return records[:3] + [empty] + records[3:]


@pytest.fixture(scope="module")
def predictor(tiny_model, bpe_tokenizer):
    return RegionPredictor(ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=6, chunk_size=2)))


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory, predictor, records):
    return run_inference(predictor, records, tmp_path_factory.mktemp("infer") / "infer-shapes-val.json")


def test_every_region_in_dataset_order_with_all_references(reference_file, records, predictor):
    entries = json.loads(reference_file.read_text())
    regions = [(record, region) for record in records for region in record.regions]
    assert len(entries) == len(regions)
    assert len({len(r.regions) for r in records}) > 1  # images differ in their number of regions
    for i, (entry, (record, region)) in enumerate(zip(entries, regions)):
        assert entry["_id"] == i and entry["split"] == "inference"
        assert entry["references"] == region.captions
        assert entry["metadata"] == {
            "metadata_input_boxes": [float(v) for v in region.box],
            "metadata_image_id": record.image_id,
            "metadata_region_id": region.region_id,
        }
        assert len(entry["candidates"]) == 1 and isinstance(entry["candidates"][0], str)
        assert len(entry["logits"]["iou_scores"]) == 3
    assert len({e["candidates"][0] for e in entries}) > 1
    assert not reference_file.with_name("infer-shapes-val.parts").exists()


def test_batches_of_images_give_the_same_file(tmp_path, predictor, records, reference_file):
    batched = json.loads(run_inference(predictor, records, tmp_path / "infer.json", batch_size=3).read_text())
    expected = json.loads(reference_file.read_text())
    # Batched matrix products round differently in the last bits: captions and metadata are equal, scores close.
    assert [{k: v for k, v in e.items() if k != "logits"} for e in batched] == \
        [{k: v for k, v in e.items() if k != "logits"} for e in expected]
    for got, want in zip(batched, expected):
        assert got["logits"]["iou_scores"] == pytest.approx(want["logits"]["iou_scores"], abs=1e-5)


class _Interrupting(RegionPredictor):
    """A predictor that is killed (KeyboardInterrupt) after `after` batches."""

    def __init__(self, predictor, after: int):
        super().__init__(predictor.model)
        self.after, self.calls = after, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return super().__call__(batch)


def test_a_killed_run_resumes_to_the_same_file(tmp_path, predictor, records, reference_file):
    output = tmp_path / "infer-shapes-val.json"
    with pytest.raises(KeyboardInterrupt):
        run_inference(_Interrupting(predictor, after=2), records, output, settings={"beams": 1})
    assert not output.exists()
    parts = tmp_path / "infer-shapes-val.parts"
    (part,) = parts.glob("rank-*.jsonl")
    assert len(part.read_text().splitlines()) == 2
    with part.open("a") as file:
        file.write('{"index": 2, "entries": [{"split": "infer')  # the half line a kill during a write leaves

    resumed = _Interrupting(predictor, after=10**6)
    run_inference(resumed, records, output, settings={"beams": 1})
    assert resumed.calls == sum(1 for r in records[2:] if r.regions)  # finished images are not redone
    assert output.read_text() == reference_file.read_text()
    assert not parts.exists()


def test_resuming_with_other_settings_is_refused(tmp_path, predictor, records):
    output = tmp_path / "infer.json"
    with pytest.raises(KeyboardInterrupt):
        run_inference(_Interrupting(predictor, after=1), records, output, settings={"num_beams": 1})
    with pytest.raises(InputError, match="num_beams"):
        run_inference(predictor, records, output, settings={"num_beams": 3})
    run_inference(predictor, records, output, settings={"num_beams": 3}, overwrite=True)
    assert output.exists()


class _Killed(Exception):
    """Stands for a SIGKILL at one step of the merge (nothing after the step runs)."""


def _killed_at(monkeypatch, target, name):
    def die(*args, **kwargs):
        raise _Killed(name)

    monkeypatch.setattr(target, name, die)


def _all_done_but_merged(tmp_path, predictor, records, monkeypatch, step):
    """Run to the end and die at one step of the merge; return the output path."""
    from sca.files import write_atomically
    from sca.infer import runner

    output = tmp_path / "infer-shapes-val.json"
    write_json = runner.write_json_atomically

    def killed_writing_the_output(path, value, **kwargs):
        if path != output:
            return write_json(path, value, **kwargs)
        if step == "before the rename":  # the temporary copy is whole, the rename never happens
            write_atomically(path.with_name(f".{path.stem}-killed{path.suffix}"),
                             lambda temporary: temporary.write_text(json.dumps(value)))
        raise _Killed(step)

    with monkeypatch.context() as patch:
        if step == "before the merge":
            _killed_at(patch, runner.PartFiles, "merge")
        elif step in ("after the marker", "before the rename"):
            patch.setattr(runner, "write_json_atomically", killed_writing_the_output)
        elif step == "after the rename":
            _killed_at(patch, runner.PartFiles, "_remove")
        with pytest.raises(_Killed):
            run_inference(predictor, records, output, settings={"beams": 1})
    return output


@pytest.mark.parametrize("step", ["before the merge", "after the marker", "before the rename", "after the rename"])
def test_a_run_killed_at_each_step_of_the_merge_recovers_the_same_bytes(tmp_path, predictor, records, reference_file,
                                                                         monkeypatch, step):
    output = _all_done_but_merged(tmp_path, predictor, records, monkeypatch, step)
    resumed = _Interrupting(predictor, after=10**6)
    run_inference(resumed, records, output, settings={"beams": 1})
    assert resumed.calls == 0  # every image was done: nothing is redone
    assert output.read_bytes() == reference_file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # no parts, no hidden copies


def test_a_whole_record_missing_its_newline_is_done_again(tmp_path, predictor, records, reference_file, monkeypatch):
    output = _all_done_but_merged(tmp_path, predictor, records, monkeypatch, "before the merge")
    (part,) = (tmp_path / "infer-shapes-val.parts").glob("rank-*.jsonl")
    part.write_bytes(part.read_bytes()[:-1])  # a short write: the last record is complete but unterminated
    resumed = _Interrupting(predictor, after=10**6)
    run_inference(resumed, records, output, settings={"beams": 1})
    assert resumed.calls == 1
    assert output.read_bytes() == reference_file.read_bytes()


def test_records_that_do_not_parse_are_done_again(tmp_path, predictor, records, reference_file, monkeypatch):
    output = _all_done_but_merged(tmp_path, predictor, records, monkeypatch, "before the merge")
    (part,) = (tmp_path / "infer-shapes-val.parts").glob("rank-*.jsonl")
    lines = part.read_text().splitlines(keepends=True)
    part.write_text(lines[0] + '{"entries": []}\n' + '{"index": "1", "entries": []}\n' + "".join(lines[2:]))
    resumed = _Interrupting(predictor, after=10**6)
    run_inference(resumed, records, output, settings={"beams": 1})
    assert resumed.calls == 1
    assert output.read_bytes() == reference_file.read_bytes()


@pytest.mark.parametrize("settings_text", ["{not json", "[1, 2]", '{"images": "many"}', ""])
def test_a_corrupted_settings_file_says_how_to_start_over(tmp_path, predictor, records, monkeypatch, settings_text):
    output = _all_done_but_merged(tmp_path, predictor, records, monkeypatch, "before the merge")
    (tmp_path / "infer-shapes-val.parts" / "settings.json").write_text(settings_text)
    with pytest.raises(InputError, match="infer.overwrite=true.*to start over"):
        run_inference(predictor, records, output, settings={"beams": 1})
    run_inference(predictor, records, output, settings={"beams": 1}, overwrite=True)
    assert output.exists()


def test_a_nan_from_the_model_is_an_error_before_anything_is_written(tmp_path, predictor, records):
    class NanScores(RegionPredictor):
        def __call__(self, batch):
            return [[RegionPrediction(p.candidates, [float("nan")] * 3) for p in image] for image in super().__call__(batch)]

    output = tmp_path / "infer.json"
    with pytest.raises(InputError, match="NaN or infinite number at entries.0.logits.iou_scores.0"):
        run_inference(NanScores(predictor.model), records, output)
    assert not output.exists()


def _infer_command(model_dir, output_dir, *extra):
    return ["infer", f"model.path={model_dir}", f"output_dir={output_dir}", "data.eval.num_images=7",
            "infer.chunk_size=2", "infer.max_new_tokens=5", *extra]


def test_two_processes_write_the_single_process_file(tmp_path, tiny_model_dir):
    # Both runs in the same thread setting, so that floating point is the same: the files must match byte for byte.
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    single_command = [sys.executable, "-m", "sca", *_infer_command(tiny_model_dir, tmp_path / "one")]
    result = subprocess.run(single_command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    single = tmp_path / "one" / "infer" / "infer-shapes-val.json"
    assert str(single) in result.stdout

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sca",
               *_infer_command(tiny_model_dir, tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    double = tmp_path / "two" / "infer" / "infer-shapes-val.json"
    assert double.read_text() == single.read_text()
    per_image = Counter(e["metadata"]["metadata_image_id"] for e in json.loads(single.read_text()))
    assert len(per_image) == 7 and len(set(per_image.values())) > 1


def test_an_existing_file_is_kept_unless_overwrite(tmp_path, tiny_model_dir, capsys):
    output = tmp_path / "infer" / "infer-shapes-val.json"
    output.parent.mkdir()
    output.write_text("[]")
    assert main(_infer_command(tiny_model_dir, tmp_path)) == 0
    assert output.read_text() == "[]"
    assert main(_infer_command(tiny_model_dir, tmp_path, "infer.overwrite=true")) == 0
    assert len(json.loads(output.read_text())) > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["infer.chunk_size=0"], "infer.chunk_size must be at least 1"),
        (["infer.dtype=float8"], "infer.dtype must be one of"),
        (["model=sca-tiny"], "needs a trained model"),
        (["data.eval.num_images=0"], "has no images"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, tiny_model_dir, capsys, overrides, message):
    assert main(_infer_command(tiny_model_dir, tmp_path, *overrides)) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "infer").exists()
