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
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.collate import RegionCollator
from ..data.records import ImageRecord
from ..data.transforms import RegionTransform
from ..errors import InputError
from ..files import to_json, write_json_atomically
from .predictor import Predictor


def infer_file_name(dataset: str, split: str) -> str:
    return f"infer-{dataset}-{split}.json"


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
    predictor: Predictor,
    records: Sequence[ImageRecord],
    output_file: str | Path,
    *,
    settings: dict | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    overwrite: bool = False,
) -> Path:
    """Predict every region of `records` and write `output_file` (infer.json).

    predictor: a batch from `RegionCollator` → one prediction per image, which `predictor.entries` turns into
        entries; its `frame` and `needs_pictures` say how the images are prepared.
    settings: what decides the output (model, generation options); a resumed run must match it.
    Under torchrun each process takes every world_size-th remaining image; all processes return the path.
    """
    output_file = Path(output_file)
    group = ProcessGroup()
    try:
        parts = PartFiles(output_file)
        if group.rank == 0:
            parts.recover()  # a killed merge: finish it; a killed write: drop its half line
        group.barrier()
        if output_file.exists() and not overwrite:
            if group.rank == 0:
                tqdm.write(f"{output_file} exists; skipping (add infer.overwrite=true to run again)")
            return output_file
        run_settings = {"images": len(records), **(settings or {})}
        parts.check(run_settings, fresh=overwrite)  # on every process, so that all stop together
        group.barrier()
        if group.rank == 0:
            parts.start(run_settings, fresh=overwrite)
        group.barrier()
        done = parts.read(len(records))

        remaining = [i for i in range(len(records)) if i not in done]
        mine = remaining[group.rank :: group.world_size]
        transform = RegionTransform(predictor.frame, tokenizer=None, train=False,
                                    keep_image=predictor.needs_pictures)
        loader = DataLoader(_IndexedImages(records, mine, transform), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=_IndexedCollator())
        with parts.writer(group.rank) as write:
            _predict(predictor, loader, write, total=len(mine), show=group.rank == 0, done=len(done))

        group.barrier()
        if group.rank == 0:
            parts.merge(len(records))
        group.barrier()
        return output_file
    finally:
        group.close()


def _predict(predictor, loader, write, total: int, show: bool, done: int) -> None:
    start, regions = time.perf_counter(), 0
    with tqdm(total=total, unit="img", desc="infer", disable=not show, dynamic_ncols=True) as bar:
        if done and show:
            bar.write(f"resuming: {done} images already done")
        for indices, samples, batch in loader:
            predictions = iter(predictor(batch) if batch is not None else [])
            metadata = iter(batch["metadata"] if batch is not None else [])
            for index, sample in zip(indices, samples):
                entries = predictor.entries(next(metadata), next(predictions)) if sample is not None else []
                write(index, entries)
                regions += len(entries)
            bar.update(len(indices))
            bar.set_postfix(regions_per_s=f"{regions / max(time.perf_counter() - start, 1e-9):.1f}")


class PartFiles:
    """The work in progress of one infer.json: a folder `{stem}.parts/` of per-process JSON-lines files
    `{"index": image index, "entries": [...]}`, the run's settings, and a marker while the merge is under way.

    Every step can be killed and resumed: a line counts only when it is whole (ends in a newline) and parses as a
    record; the merge writes the output atomically, marked so that the next run finishes a merge that was killed
    (before or after the rename) instead of redoing or losing work.
    """

    SETTINGS = "settings.json"
    MERGING = "merging"

    def __init__(self, output_file: Path):
        self.output_file = output_file
        self.folder = output_file.with_name(output_file.stem + ".parts")

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("rank-*.jsonl"))

    def _fail(self, problem: str) -> InputError:
        return InputError(f"{self.folder} holds a partial run that {problem}: remove {self.folder} (or set "
                          "infer.overwrite=true) to start over")

    def recover(self) -> None:
        """Clean up after a killed run: temporary copies of the output, half-written lines, an unfinished merge."""
        for temporary in self.output_file.parent.glob(f".{self.output_file.stem}-*{self.output_file.suffix}"):
            temporary.unlink(missing_ok=True)
        if not self.folder.is_dir():
            return
        for path in self.files():
            data = path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            if whole != data:
                path.write_bytes(whole)
        if (self.folder / self.MERGING).exists():
            if self.output_file.exists():
                self._remove()  # the merge was done; only its clean-up was cut short
            else:
                self.merge(self._settings()["images"])

    def _settings(self) -> dict:
        try:
            settings = json.loads((self.folder / self.SETTINGS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise self._fail("has no readable settings.json") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("images"), int):
            raise self._fail("has a settings.json without the run's image count")
        return settings

    def check(self, settings: dict, fresh: bool) -> None:
        """An earlier partial run is continued only with the same settings."""
        if fresh or not (self.folder / self.SETTINGS).exists():
            return
        previous = self._settings()
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise InputError(
                f"{self.folder} holds a partial run with other settings ({', '.join(changed)}): "
                "run with the same settings to resume, or set infer.overwrite=true to start again"
            )

    def start(self, settings: dict, fresh: bool) -> None:
        """Begin (`fresh`: after removing an earlier partial run), or continue a checked earlier run."""
        if fresh and self.folder.is_dir():
            self._remove()
        if not (self.folder / self.SETTINGS).exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.folder / self.SETTINGS, settings, indent=2)

    def read(self, num_images: int) -> dict[int, list[dict]]:
        """The finished images: every whole line that parses as a record of an image of this run."""
        done: dict[int, list[dict]] = {}
        for path in self.files():
            for line in path.read_bytes().splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    continue  # a write cut short; that image is done again
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if not (isinstance(item, dict) and isinstance(item.get("entries"), list)
                        and all(isinstance(e, dict) for e in item["entries"])
                        and isinstance(item.get("index"), int) and not isinstance(item["index"], bool)):
                    continue
                if not 0 <= item["index"] < num_images:
                    raise self._fail(f"is of another dataset ({path.name} holds image {item['index']} of {num_images})")
                done.setdefault(item["index"], item["entries"])
        return done

    def writer(self, rank: int):
        return _PartWriter(self.folder / f"rank-{rank:05d}.jsonl")

    def merge(self, num_images: int) -> None:
        """Write the output from the parts (by image index), then remove them."""
        done = self.read(num_images)
        missing = [i for i in range(num_images) if i not in done]
        if missing:
            raise self._fail(f"lacks {len(missing)} of its {num_images} images (first: {missing[0]}); run it again "
                             "with the same settings to finish them")
        (self.folder / self.MERGING).touch()
        entries = [entry for index in range(num_images) for entry in done[index]]
        merged = [{"_id": i, **entry} for i, entry in enumerate(entries)]
        write_json_atomically(self.output_file, merged, indent=4, ensure_ascii=False)
        self._remove()

    def _remove(self) -> None:
        for path in self.files():
            path.unlink()
        (self.folder / self.SETTINGS).unlink(missing_ok=True)
        (self.folder / self.MERGING).unlink(missing_ok=True)  # last: while it is there, the merge is not cleaned up
        shutil.rmtree(self.folder, ignore_errors=True)


class _PartWriter:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "a", encoding="utf-8")
        return self.write

    def write(self, index: int, entries: list[dict]) -> None:
        line = to_json({"index": index, "entries": entries}, what=f"the entries of image {index}")
        self.file.write(line + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def __exit__(self, *exc):
        self.file.close()
