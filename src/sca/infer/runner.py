"""Dataset inference that can be interrupted, resumed and spread over processes without changing its output.

Every image has a global index (its position in the dataset). Each process writes the images it finished,
one JSON line each, to its own part file; when all images are done, process 0 merges the parts by image
index into infer.json and writes it atomically. Nothing is padded or gathered through collectives, so the
merged file is the same for any number of processes and any number of regions per image, and a killed run
loses at most the images it was working on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.collate import RegionCollator
from ..data.records import ImageRecord
from ..data.transforms import RegionTransform
from ..errors import InputError
from ..files import write_text_atomically
from .predictor import SPLIT_FIELD, RegionPrediction

def infer_file_name(dataset: str, split: str) -> str:
    return f"infer-{dataset}-{split}.json"


def region_entries(metadata: dict, predictions: Sequence[RegionPrediction]) -> list[dict]:
    """One image's infer.json entries (without `_id`, which is given at the merge)."""
    return [
        {
            "split": SPLIT_FIELD,
            "references": list(references),
            "candidates": list(prediction.candidates),
            "metadata": {
                "metadata_input_boxes": [float(v) for v in box],
                "metadata_image_id": metadata["image_id"],
                "metadata_region_id": region_id,
            },
            "logits": {"iou_scores": [float(s) for s in prediction.iou_scores]},
        }
        for box, region_id, references, prediction in zip(
            metadata["boxes"], metadata["region_ids"], metadata["references"], predictions, strict=True
        )
    ]


class ProcessGroup:
    """Rank, world size and barriers from torchrun's environment (a gloo group is started if none is)."""

    def __init__(self):
        import torch.distributed as dist

        self._dist = dist
        self._owned = False
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            self._owned = True
        self.distributed = dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1

    def barrier(self) -> None:
        if self.distributed:
            self._dist.barrier()

    def close(self) -> None:
        if self._owned:
            self._dist.destroy_process_group()


class _IndexedImages(Dataset):
    def __init__(self, records: Sequence[ImageRecord], indices: Sequence[int], transform: RegionTransform):
        self.records, self.indices, self.transform = records, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        return index, self.transform(self.records[index])


class _IndexedCollator:
    def __init__(self):
        self.collate = RegionCollator(with_metadata=True)

    def __call__(self, items):
        indices = [index for index, _ in items]
        samples = [sample for _, sample in items]
        return indices, samples, self.collate(samples)


def run_inference(
    predictor: Callable[[dict], list[list[RegionPrediction]]],
    records: Sequence[ImageRecord],
    output_file: str | Path,
    *,
    settings: dict | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    overwrite: bool = False,
) -> Path:
    """Predict every region of `records` and write `output_file` (infer.json).

    predictor: a batch from `RegionCollator` → per image, one `RegionPrediction` per region; it also
        provides `frame` (the `SamFrame` its model expects).
    settings: what decides the output (model, generation options); a resumed run must match it.
    Under torchrun each process takes every world_size-th remaining image; all processes return the path.
    """
    output_file = Path(output_file)
    group = ProcessGroup()
    try:
        if output_file.exists() and not overwrite:
            if group.rank == 0:
                tqdm.write(f"{output_file} exists; skipping (set overwrite to run again)")
            return output_file
        parts = PartFiles(output_file.with_name(output_file.stem + ".parts"))
        run_settings = {"images": len(records), **(settings or {})}
        done = parts.check_and_read(run_settings, len(records), fresh=overwrite)
        group.barrier()
        if group.rank == 0:
            parts.start(run_settings, fresh=overwrite)
        group.barrier()

        remaining = [i for i in range(len(records)) if i not in done]
        mine = remaining[group.rank :: group.world_size]
        transform = RegionTransform(predictor.frame, tokenizer=None, train=False,
                                    keep_image=getattr(predictor, "needs_images", False))
        loader = DataLoader(_IndexedImages(records, mine, transform), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=_IndexedCollator())
        with parts.writer(group.rank) as write:
            _predict(predictor, loader, write, total=len(mine), show=group.rank == 0, done=len(done))

        group.barrier()
        if group.rank == 0:
            parts.merge_into(output_file, len(records))
        group.barrier()
        return output_file
    finally:
        group.close()


def _predict(predictor, loader, write, total: int, show: bool, done: int) -> None:
    start, regions = time.perf_counter(), 0
    make_entries = getattr(predictor, "entries", region_entries)
    with tqdm(total=total, unit="img", desc="infer", disable=not show, dynamic_ncols=True) as bar:
        if done and show:
            bar.write(f"resuming: {done} images already done")
        for indices, samples, batch in loader:
            predictions = iter(predictor(batch) if batch is not None else [])
            metadata = iter(batch["metadata"] if batch is not None else [])
            for index, sample in zip(indices, samples):
                entries = make_entries(next(metadata), next(predictions)) if sample is not None else []
                write(index, entries)
                regions += len(entries)
            bar.update(len(indices))
            bar.set_postfix(regions_per_s=f"{regions / max(time.perf_counter() - start, 1e-9):.1f}")


class PartFiles:
    """A folder of per-process JSON-lines files `{"index": image index, "entries": [...]}` plus the run settings."""

    SETTINGS = "settings.json"

    def __init__(self, folder: Path):
        self.folder = folder

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("rank-*.jsonl"))

    def check_and_read(self, settings: dict, num_images: int, fresh: bool) -> dict[int, list[dict]]:
        """The finished images of an earlier run with the same settings (none if `fresh`)."""
        settings_file = self.folder / self.SETTINGS
        if fresh or not settings_file.is_file():
            return {}
        previous = json.loads(settings_file.read_text())
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise InputError(
                f"{self.folder} holds a partial run with other settings ({', '.join(changed)}): "
                "run with the same settings to resume, or set overwrite to start again"
            )
        return self.read(num_images)

    def read(self, num_images: int) -> dict[int, list[dict]]:
        done: dict[int, list[dict]] = {}
        for path in self.files():
            for line in path.read_text().splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed process; that image is done again
                if not 0 <= item["index"] < num_images:
                    raise InputError(f"{path} holds image index {item['index']} of a different dataset: remove {self.folder}")
                done.setdefault(item["index"], item["entries"])
        return done

    def start(self, settings: dict, fresh: bool) -> None:
        """Create the folder, or keep only the whole lines of an earlier run's files (a killed write leaves half a line)."""
        if fresh:
            for path in self.files():
                path.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in self.files():
            text = path.read_text()
            whole = text[: text.rfind("\n") + 1]
            if whole != text:
                path.write_text(whole)
        write_text_atomically(self.folder / self.SETTINGS, json.dumps(settings, indent=2))

    def writer(self, rank: int):
        return _PartWriter(self.folder / f"rank-{rank:05d}.jsonl")

    def merge_into(self, output_file: Path, num_images: int) -> None:
        done = self.read(num_images)
        missing = [i for i in range(num_images) if i not in done]
        if missing:
            raise RuntimeError(f"inference parts in {self.folder} lack {len(missing)} images (first: {missing[0]})")
        entries = [entry for index in range(num_images) for entry in done[index]]
        merged = [{"_id": i, **entry} for i, entry in enumerate(entries)]
        write_text_atomically(output_file, json.dumps(merged, indent=4, ensure_ascii=False))
        for path in self.files():
            path.unlink()
        (self.folder / self.SETTINGS).unlink()
        self.folder.rmdir()


class _PartWriter:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "a", encoding="utf-8")
        return self.write

    def write(self, index: int, entries: list[dict]) -> None:
        self.file.write(json.dumps({"index": index, "entries": entries}) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def __exit__(self, *exc):
        self.file.close()


def resolve_device(device: str) -> torch.device:
    """`auto`: this process's GPU under torchrun if there is one, else the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
