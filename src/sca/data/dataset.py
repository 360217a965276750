"""Torch datasets over records: one source, or several mixed by probability."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .records import ImageRecord
from .transforms import RegionTransform


class RegionDataset(Dataset):
    """Transformed records. An image left with no usable region (all boxes jittered away) yields the next one."""

    def __init__(self, records: Sequence[ImageRecord], transform: RegionTransform):
        if not records:
            raise ValueError("dataset has no images")
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.records)):
            # Draw from torch's RNG so the Trainer's seeding (and its per-worker seeds) make runs repeatable.
            seed = int(torch.randint(2**62, ()).item()) if self.transform.train else index
            sample = self.transform(self.records[(index + attempt) % len(self.records)], seed)
            if sample is not None:
                return sample
        raise ValueError("no image in the dataset has a usable region")


class MixedDataset(Dataset):
    """Samples from several datasets by probability; item i is the same draw on every process."""

    def __init__(self, datasets: Sequence[Dataset], probabilities: Sequence[float], length: int | None = None, seed: int = 0):
        if len(datasets) != len(probabilities) or not datasets:
            raise ValueError("give one probability per training set")
        total = float(sum(probabilities))
        if total <= 0 or any(p < 0 for p in probabilities):
            raise ValueError(f"probabilities must be non-negative and not all zero, got {list(probabilities)}")
        self.datasets = list(datasets)
        self.weights = [p / total for p in probabilities]
        self.length = length or sum(len(d) for d in datasets)
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = random.Random(self.seed * 1_000_003 + index)
        dataset = rng.choices(self.datasets, weights=self.weights)[0]
        return dataset[rng.randrange(len(dataset))]
