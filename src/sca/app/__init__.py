"""The web demo: a page where a person prompts regions of an image and sees masks and captions."""
