"""Dataset inference: run a model over every region of a dataset and write infer.json."""
