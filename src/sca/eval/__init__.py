"""Evaluation: caption metrics (pycocoevalcap)."""
