"""How a region's one caption is chosen from its candidates: the rule every front door and `sca eval` share.

No torch here, so that reading an infer.json stays light.
"""

from __future__ import annotations

from collections.abc import Sequence


def best_candidate(candidates: Sequence[str], scores: Sequence[float] | None) -> str | None:
    """With one candidate per mask (SAM-Captioner), the caption of the mask with the highest predicted IoU (the
    first of equals); with a single candidate (SCA), that one; "" with none. None when there are several candidates
    but no score for each: the caller decides."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else ""
    if scores is None or len(scores) != len(candidates):
        return None
    return candidates[max(range(len(scores)), key=scores.__getitem__)]
