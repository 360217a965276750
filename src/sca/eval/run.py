"""`sca eval`: score infer.json files, write metrics.json per file and one comparison table for all."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..files import write_json_atomically, write_text_atomically
from ..tables import csv_table, markdown_table
from .captions import METRICS, check_spice, score_captions
from .content_recall import load_spacy
from .dense import DensePrediction, DenseReference, dense_captioning_map
from .infer_file import is_dense, read_infer_file, select_candidates, without_logits
from .java import ensure_java

DENSE_METRICS = ("mAP", "detection_mAP")


def evaluate_file(path: str | Path, spice: bool = False, content_recall: bool = False, nlp=None) -> dict:
    """Metrics of one infer.json on pycocoevalcap's 0-1 scale, plus per-entry scores under `per_entry`.
    content_recall: also noun/verb recall, tagged by `nlp` (default: spaCy's en_core_web_lg)."""
    return evaluate_entries(read_infer_file(path), path, spice, content_recall, nlp)


def evaluate_entries(entries: list[dict], path: str | Path, spice: bool = False, content_recall: bool = False,
                     nlp=None) -> dict:
    """`evaluate_file` on entries already read (and checked) from `path`."""
    if is_dense(entries):
        images = [
            ([DensePrediction(p["box"], p["caption"], float(p["score"])) for p in e["predictions"]],
             [DenseReference(r["box"], r["captions"]) for r in e["references"]])
            for e in entries
        ]
        try:
            result = dense_captioning_map(images)
        except ValueError as error:
            raise InputError(f"{path}: {error}") from error
        return {"kind": "dense", "images": len(entries), **result}
    candidates = select_candidates(entries)
    keys = [str(i) for i in range(len(entries))]
    corpus, per_entry = score_captions(
        {k: e["references"] for k, e in zip(keys, entries)}, dict(zip(keys, candidates)), spice=spice
    )
    result = {"kind": "regions", "regions": len(entries), **corpus}
    if content_recall:
        from .content_recall import content_recall as recall

        result.update({f"{k}_recall": v for k, v in recall([e["references"] for e in entries], candidates, nlp).items()})
    order = sorted(keys)  # score_captions' per-entry order
    result["per_entry"] = {name: {int(k): s for k, s in zip(order, scores)} for name, scores in per_entry.items()}
    return result


def evaluate_files(paths: list[Path], out_dir: Path | None = None, spice: bool = False,
                   content_recall: bool = False, strip_logits: bool = False,
                   names: list[str] | None = None) -> dict[str, dict]:
    """Evaluate each file; writes `{file's folder}/metrics/{stem}/metrics.json` (+ `scores.json` per entry) and
    `metrics.md` / `metrics.csv` comparing all files in `out_dir` (default: the first file's `metrics/`).

    Rows are named by `names`, else by each file's run (see `run_names`); every result also carries its
    `run`, `dataset` and `split`."""
    if not paths:
        raise InputError("no infer.json given")
    labels = run_names(paths, names)
    # Fail before minutes of scoring, not after (files are read again one at a time: several need not fit at once).
    for path in paths:
        read_infer_file(path)
    ensure_java()
    if spice:
        check_spice()
    nlp = load_spacy() if content_recall else None
    results = {}
    for path in paths:
        entries = read_infer_file(path)
        result = evaluate_entries(entries, path, spice=spice, content_recall=content_recall, nlp=nlp)
        result = {**labels[path], **result}
        folder = path.parent / "metrics" / path.stem
        per_entry = result.pop("per_entry", None)
        write_json_atomically(folder / "metrics.json", {"file": str(path), **result}, indent=2)
        if per_entry is not None:
            write_json_atomically(folder / "scores.json", per_entry)
        if strip_logits:
            write_json_atomically(path.with_name(f"{path.stem}.no-logits.json"), without_logits(entries), indent=4)
        results[str(path)] = result
    out_dir = comparison_dir(paths, out_dir)
    header, rows = comparison_rows(results)
    note = "Scores x100 (pycocoevalcap, PTB-tokenized; count = regions, or images for mAP)."
    write_text_atomically(out_dir / "metrics.md", markdown_table(header, rows, note=note))
    write_text_atomically(out_dir / "metrics.csv", csv_table(header, rows))
    return results


def comparison_dir(paths: list[Path], out_dir: Path | None = None) -> Path:
    """Where the comparison table goes: `out_dir`, else the first file's `metrics/`."""
    return out_dir or paths[0].parent / "metrics"


def dataset_and_split(path: Path) -> tuple[str, str]:
    """`infer-{dataset}-{split}.json` → (dataset, split); another name → (its stem, "")."""
    stem = path.stem
    if not stem.startswith("infer-"):
        return stem, ""
    dataset, _, split = stem[len("infer-"):].rpartition("-")
    return (dataset, split) if dataset else (split, "")


def run_names(paths: list[Path], names: list[str] | None = None) -> dict[Path, dict[str, str]]:
    """Each file's `run`, `dataset` and `split`. The run is `names[i]` when given, else the run's output folder
    (`{output_dir}/infer/infer-*.json` → `output_dir`'s name; a sweep's `num_beams=3`), with as many parent
    folders as it takes to tell apart files of the same dataset and split."""
    if names is not None and len(names) != len(paths):
        raise InputError(f"--names gives {len(names)} names for {len(paths)} files: give one per file")
    splits = [dataset_and_split(path) for path in paths]
    folders = [(p.parent.parent if p.parent.name == "infer" else p.parent).resolve() for p in paths]
    labels = names
    if labels is None:
        depth = 1
        while True:
            labels = ["/".join(folder.parts[-depth:]) for folder in folders]
            if len(set(zip(labels, splits))) == len(paths) or depth >= max(len(f.parts) for f in folders):
                break
            depth += 1
    return {path: {"run": label, "dataset": dataset, "split": split}
            for path, label, (dataset, split) in zip(paths, labels, splits)}


def comparison_rows(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """A table with one row per file (its run, dataset and split); metrics x100 as papers print them."""
    names = [m for m in (*METRICS, "SPICE", "noun_recall", "verb_recall", "noun_fuzzy_recall", "verb_fuzzy_recall",
                         *DENSE_METRICS) if any(m in r for r in results.values())]
    header = ["run", "dataset", "split", "count", *names]
    rows = []
    for path, result in results.items():
        count = result.get("regions", result.get("images"))
        dataset, split = dataset_and_split(Path(path))
        rows.append([result.get("run", Path(path).parent.name), result.get("dataset", dataset),
                     result.get("split", split), str(count),
                     *(f"{100 * result[m]:.2f}" if m in result else "" for m in names)])
    return header, rows
