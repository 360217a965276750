"""The model's one worker: a bounded first-in-first-out queue of jobs, embeddings cached by image content, and
regions of concurrent requests decoded together.

The model runs on one thread (one model, one stream of work); the server's event loop only queues jobs and awaits
them. A full queue is refused at once (the server answers 503 with Retry-After). Jobs are taken in arrival order;
caption jobs waiting behind the first one whose prompts have the same kinds join its model step (dynamic batching:
the language model decodes all their regions in one batch). A job whose client went away is dropped between
chunks of regions.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..api import RegionCaption, full_size_rles
from ..models.prompts import Prompts
from ..models.region_model import EncodedImages, RegionModel

MAX_BATCH_IMAGES = 8
"""Caption jobs decoded together at most."""


class QueueFull(Exception):
    """The queue holds as many jobs as it may: come back later."""


@dataclass
class Job:
    """A unit of model work. `run(worker)` is called on the worker thread; `batch_key` (caption jobs) says which
    jobs may share a model step."""

    run: Callable
    payload: object = None
    batch_key: tuple | None = None
    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)


class LruBytes:
    """A least-recently-used mapping bounded by the bytes of its values (`size(value)`)."""

    def __init__(self, max_bytes: int, size: Callable[[object], int]):
        self.max_bytes, self.size = max_bytes, size
        self.items: OrderedDict[str, object] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, key: str):
        with self.lock:
            if key not in self.items:
                return None
            self.items.move_to_end(key)
            return self.items[key]

    def put(self, key: str, value) -> None:
        with self.lock:
            if key in self.items:
                self.bytes -= self.size(self.items.pop(key))
            self.items[key] = value
            self.bytes += self.size(value)
            while self.bytes > self.max_bytes and len(self.items) > 1:
                _, evicted = self.items.popitem(last=False)
                self.bytes -= self.size(evicted)

    def __contains__(self, key: str) -> bool:
        with self.lock:
            return key in self.items


def encoded_bytes(encoded: EncodedImages) -> int:
    pixels = sum(f.pixel_values.numel() * f.pixel_values.element_size() for f in encoded.framed)
    pictures = sum(p.width * p.height * 3 for p in encoded.pictures or [])
    return encoded.embeddings.numel() * encoded.embeddings.element_size() + pixels + pictures


class ModelWorker:
    """Runs jobs on one thread, first in, first out, from a queue of at most `queue_size` jobs."""

    def __init__(self, model: RegionModel, queue_size: int = 32, cache_bytes: int = 512 * 2**20, chunk_size: int = 16):
        self.model = model
        self.queue_size = queue_size
        self.chunk_size = chunk_size
        self.embeddings = LruBytes(cache_bytes, encoded_bytes)
        self._jobs: deque[Job] = deque()
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="sca-model", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        with self._condition:
            return len(self._jobs)

    def submit(self, job: Job) -> Job:
        with self._condition:
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(f"{len(self._jobs)} requests are waiting for the model")
            self._jobs.append(job)
            self._condition.notify()
        return job

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._jobs and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                batch = [self._jobs.popleft()]
                if batch[0].batch_key is not None:  # later jobs that can share the first one's model step
                    for job in list(self._jobs):
                        if len(batch) >= MAX_BATCH_IMAGES:
                            break
                        if job.batch_key == batch[0].batch_key:
                            self._jobs.remove(job)
                            batch.append(job)
            live = [job for job in batch if not job.cancelled.is_set() and job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = live[0].run(self, live)
            except Exception as error:  # each client learns of its own failure; the worker lives on
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            for job, result in zip(live, results):
                if not job.future.done():
                    job.future.set_result(result)

    # ------------------------------------------------------------------ model work (on the worker thread)

    def encoded(self, image_id: str, picture: Image.Image) -> EncodedImages:
        """The image's encoding, from the cache when the same image was seen."""
        cached = self.embeddings.get(image_id)
        if cached is None:
            cached = self.model.encode([picture])
            self.embeddings.put(image_id, cached)
        return cached

    def caption(self, jobs: list[Job], encodings: list[EncodedImages], prompts: list[Prompts], records: list[list[dict]],
                multimask_output: bool = True) -> list[list[RegionCaption] | None]:
        """The regions of several jobs (one image each, prompts of the same kinds) in one model step per chunk of
        regions; a job cancelled meanwhile leaves the batch at the next chunk (its result is None)."""
        count = max(p.num_regions for p in prompts)
        padded = [_pad(p, count) for p in prompts]
        results: list[list[RegionCaption]] = [[] for _ in jobs]
        for start in range(0, count, self.chunk_size):
            active = [i for i, job in enumerate(jobs) if not job.cancelled.is_set() and start < prompts[i].num_regions]
            if not active:
                break
            encoded = EncodedImages.concat([encodings[i] for i in active])
            chunk = slice(start, start + self.chunk_size)
            batch = _stack([padded[i].take(chunk) for i in active])
            output = self.model.caption(encoded, batch, None, multimask_output)
            scores = output.iou_scores.float().cpu().tolist()
            for row, i in enumerate(active):
                for r, record in enumerate(records[i][chunk]):
                    rles = full_size_rles(self.model.frame, output.low_res_masks[row, r], encoded.framed[row])
                    candidates = output.candidates[row][r]
                    best = (candidates[int(torch.tensor(scores[row][r]).argmax())]
                            if len(candidates) == len(scores[row][r]) else candidates[0])
                    results[i].append(RegionCaption(best, rles, scores[row][r], record,
                                                    list(candidates)))
        return [None if job.cancelled.is_set() else result for job, result in zip(jobs, results)]


def _pad(prompts: Prompts, count: int) -> Prompts:
    """Prompts padded to `count` regions by repeating the last one, marked not `valid`."""
    missing = count - prompts.num_regions
    valid = torch.ones(1, count, dtype=torch.bool)
    if missing == 0:
        return Prompts(**{**prompts.tensors(), "valid": valid})
    valid[:, prompts.num_regions :] = False
    padded = {name: torch.cat([value, value[:, -1:].expand(-1, missing, *value.shape[2:])], dim=1)
              for name, value in prompts.tensors().items() if name != "valid"}
    return Prompts(**padded, valid=valid)


def _stack(prompts: list[Prompts]) -> Prompts:
    names = prompts[0].tensors().keys()
    return Prompts(**{name: torch.cat([p.tensors()[name] for p in prompts]) for name in names})


