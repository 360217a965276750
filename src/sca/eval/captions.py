"""Caption metrics from pycocoevalcap (its Java METEOR 1.5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

EMPTY_CAPTION = "<empty>"
"""METEOR's Java process cannot score an empty string; an empty caption is scored as this placeholder."""


def meteor(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]) -> float:
    """Corpus METEOR of one candidate per key against that key's references."""
    from pycocoevalcap.meteor.meteor import Meteor

    keys = sorted(candidates)
    gts = {k: [r.strip() or EMPTY_CAPTION for r in references[k]] for k in keys}
    res = {k: [candidates[k].strip() or EMPTY_CAPTION] for k in keys}
    score, _ = Meteor().compute_score(gts, res)  # the Java process ends when the scorer is collected
    return float(score)
