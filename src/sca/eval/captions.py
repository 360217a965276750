"""Caption metrics from pycocoevalcap: PTB tokenization, BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D, SPICE.

Scores are pycocoevalcap's own, on its 0-1 scale (papers print them x100).
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError
from .java import ensure_java

EMPTY_CAPTION = "<empty>"
"""METEOR's Java process cannot score an empty string; an empty caption is scored as this placeholder."""

METEOR_MIN_SECONDS = 300.0
METEOR_SECONDS_PER_ENTRY = 0.05
"""How long METEOR's JVM may take before it counts as stuck: start-up plus ~1 ms an entry, with a wide margin."""

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")


def ptb_tokenize(texts: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTB tokenizer (Stanford CoreNLP, lower-cased, punctuation removed)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ensure_java()
    # One sentence per line: a caption holding a newline would shift every later caption.
    flat = {k: [{"caption": " ".join(t.split())} for t in v] for k, v in texts.items()}
    with _java_stderr_silenced():
        tokenized = PTBTokenizer().tokenize(flat)
    missing = [k for k in texts if len(tokenized.get(k, [])) != len(texts[k])]
    if missing:
        raise RuntimeError(f"the PTB tokenizer lost captions of {len(missing)} entries (first: {missing[0]})")
    return tokenized


@contextmanager
def _java_stderr_silenced():
    """The PTB tokenizer's JVM prints token counts and warnings to our stderr; a user should see our output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def score_captions(
    references: Mapping[str, Sequence[str]],
    candidates: Mapping[str, str],
    spice: bool = False,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Corpus scores and per-entry scores of one candidate per key against that key's references.

    Both are PTB-tokenized first, as in the COCO caption evaluation. Returns `(corpus, per_entry)`, each keyed
    by metric name (`METRICS`, plus `SPICE` if asked); per-entry lists follow `sorted(candidates)`.
    """
    return score_caption_groups({"": (references, candidates)}, spice)[""]


def score_caption_groups(
    groups: Mapping[str, tuple[Mapping[str, Sequence[str]], Mapping[str, str]]],
    spice: bool = False,
) -> dict[str, tuple[dict[str, float], dict[str, list[float]]]]:
    """`score_captions` of several groups (name → references, candidates), each scored on its own (corpus scores
    are a group's), with one PTB tokenization and one METEOR process for all: each starts a JVM, seconds each."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    texts: dict[tuple[str, str, str], Sequence[str]] = {}
    for name, (references, candidates) in groups.items():
        if not candidates:
            raise InputError("no captions to score" + (f" ({name})" if name else ""))
        for key in sorted(candidates):
            texts[name, "references", key] = references[key]
            texts[name, "candidate", key] = [candidates[key]]
    tokenized = ptb_tokenize(texts)
    # pycocoevalcap iterates dict keys; give every scorer the same order.
    prepared = {name: ({k: tokenized[name, "references", k] for k in sorted(candidates)},
                       {k: tokenized[name, "candidate", k] for k in sorted(candidates)})
                for name, (_, candidates) in groups.items()}
    meteors = _run_meteor(list(prepared.values()))
    scored = {}
    for (name, (gts, res)), (meteor_score, meteor_entries) in zip(prepared.items(), meteors):
        corpus, per_entry = {}, {}
        bleu, bleu_entries = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            corpus[f"BLEU-{n + 1}"] = float(bleu[n])
            per_entry[f"BLEU-{n + 1}"] = [float(s) for s in bleu_entries[n]]
        corpus["METEOR"], per_entry["METEOR"] = meteor_score, meteor_entries
        corpus["ROUGE-L"], scores = Rouge().compute_score(gts, res)
        per_entry["ROUGE-L"] = [float(s) for s in scores]
        corpus["CIDEr-D"], scores = Cider().compute_score(gts, res)
        per_entry["CIDEr-D"] = [float(s) for s in scores]
        if spice:
            corpus["SPICE"], per_entry["SPICE"] = _spice(gts, res)
        scored[name] = ({k: float(v) for k, v in corpus.items()}, per_entry)
    return scored


def meteor_per_entry(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]) -> dict[str, float]:
    """METEOR of each candidate against its references, untokenized (as DenseCap scored its matches)."""
    keys, gts, res = _untokenized(references, candidates)
    return dict(zip(keys, _run_meteor([(gts, res)])[0][1])) if keys else {}


def meteor(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]) -> float:
    """Corpus METEOR of one candidate per key against its references, untokenized (the training log's metric)."""
    _, gts, res = _untokenized(references, candidates)
    return _run_meteor([(gts, res)])[0][0]


def _untokenized(references, candidates) -> tuple[list[str], dict, dict]:
    keys = sorted(candidates)
    gts = {k: [" ".join(r.split()) for r in references[k]] for k in keys}
    res = {k: [" ".join(candidates[k].split())] for k in keys}
    return keys, gts, res


def _run_meteor(sets: list[tuple[Mapping[str, list[str]], Mapping[str, list[str]]]]) -> list[tuple[float, list[float]]]:
    """pycocoevalcap's METEOR of each `(references, candidates)` set, in one JVM, guarded: its stderr is drained
    (pycocoevalcap pipes it and never reads it, so a JVM that writes 64 KB there stalls), and a JVM that stops
    answering is killed after a generous time (the reads have no timeout: it would hang the run) and tried once more
    before the run fails with its last words."""
    def non_empty(texts):
        return [t if t.strip() else EMPTY_CAPTION for t in texts]

    sets = [({k: non_empty(v) for k, v in gts.items()}, {k: non_empty(v) for k, v in res.items()}) for gts, res in sets]
    timeout = METEOR_MIN_SECONDS + METEOR_SECONDS_PER_ENTRY * sum(len(res) for _, res in sets)
    for _ in range(2):
        outcome, last_words = _meteor_once(sets, timeout)
        if outcome is not None:
            return outcome
    raise RuntimeError(f"METEOR's Java process gave no answer within {timeout:.0f} s, twice"
                       + (f"; it last said: {' | '.join(last_words)}" if last_words else ""))


def _meteor_once(sets: list[tuple[Mapping[str, list[str]], Mapping[str, list[str]]]], timeout: float
                 ) -> tuple[list[tuple[float, list[float]]] | None, list[str]]:
    """One METEOR process for every set: `([(score, per-entry scores), ...], [])`, or `(None, its last stderr lines)`
    when it timed out."""
    from pycocoevalcap.meteor.meteor import Meteor

    ensure_java()
    scorer = Meteor()
    process, last_words, outcome = scorer.meteor_p, deque(maxlen=5), {}
    drain = threading.Thread(target=lambda: last_words.extend(
        line.decode(errors="replace").strip() for line in process.stderr), daemon=True)
    drain.start()

    def score():
        try:
            outcome["scores"] = [scorer.compute_score(gts, res) for gts, res in sets]
        except Exception as error:  # re-raised in the caller's thread (or the JVM was killed: timed out)
            outcome["error"] = error

    worker = threading.Thread(target=score, daemon=True)
    worker.start()
    worker.join(timeout)
    timed_out = worker.is_alive()
    # pycocoevalcap leaves its JVM running until garbage collection; end it now (this also ends a stuck read).
    if process.poll() is None:
        process.stdin.close()
        process.kill()
    process.wait()
    worker.join()
    drain.join(timeout=5)
    if timed_out:
        return None, [line for line in last_words if line]
    if "error" in outcome:
        raise outcome["error"]
    return [(float(score), [float(s) for s in scores]) for score, scores in outcome["scores"]], []


def check_spice() -> None:
    """SPICE's parser jars are fetched by pycocoevalcap on first use, which needs network: say so up front."""
    import pycocoevalcap.spice as spice_package

    lib = Path(spice_package.__file__).parent / "lib"
    if not list(lib.glob("stanford-corenlp-3.6.0*.jar")):
        raise InputError(
            f"SPICE needs the Stanford CoreNLP 3.6.0 jars in {lib}, which pycocoevalcap downloads on first use: "
            "run `python -c 'from pycocoevalcap.spice.get_stanford_models import get_stanford_models; "
            "get_stanford_models()'` once with network, or leave out --spice"
        )


def _spice(gts, res) -> tuple[float, list[float]]:
    from pycocoevalcap.spice.spice import Spice

    check_spice()
    score, entries = Spice().compute_score(gts, res)
    return float(score), [float(e["All"]["f"]) for e in entries]
