"""Data: images, prompts, SAM preprocessing."""
