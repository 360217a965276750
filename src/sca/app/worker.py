"""The model's one worker: a bounded first-in-first-out queue of typed jobs, embeddings cached by image content, and
regions of concurrent requests decoded together.

The model runs on one thread (one model, one stream of work); the server's event loop only queues jobs and awaits
them. A full queue is refused at once (the server answers 503 with Retry-After). Jobs are taken in arrival order;
caption jobs waiting behind the first one join its model steps (dynamic batching: the language model decodes the
regions of several requests in one batch). One request is one job, whatever its prompt kinds. All model work goes
through `engine.RegionEngine`; a job whose client went away stops at the engine's next step.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from ..anything import Cancelled
from ..engine import ImageRegions, RegionCaption, RegionEngine
from ..models.prompts import RegionPrompt
from ..models.region_model import EncodedImages, RegionModel
from ..options import AnythingOptions, GenerationOptions, VideoOptions
from ..video.trackers import ReprompterTracker, Tracker

MAX_BATCH_IMAGES = 8
"""Caption jobs decoded together at most."""


class QueueFull(Exception):
    """The queue holds as many jobs as it may: come back later."""


@dataclass(kw_only=True)
class Job:
    """A unit of model work, run on the worker thread by `run(worker, jobs)` (jobs: this one and those that share
    its model steps; one result each, None for a job cancelled meanwhile)."""

    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)

    batches: bool = False
    """Whether later jobs of the same type may join this one's model steps."""

    def run(self, worker: ModelWorker, jobs: list[Job]) -> list:
        raise NotImplementedError


@dataclass(kw_only=True)
class CaptionJob(Job):
    """Regions of one image (any mix of prompt kinds), captioned."""

    image_id: str
    picture: Image.Image
    regions: list[RegionPrompt]
    multimask_output: bool = True
    batches: bool = True

    def run(self, worker: ModelWorker, jobs: list[CaptionJob]) -> list[list[RegionCaption] | None]:
        images, owners, results = [], [], [None] * len(jobs)
        for i, job in enumerate(jobs):
            if job.cancelled.is_set():
                continue
            encoded = worker.encoded(job.image_id, job.picture)
            try:
                groups = worker.engine.group(encoded, job.regions)  # masks decoded here, one at a time
            except Exception as error:  # this client's mistake is its own; the others go on
                job.future.set_exception(error)
                continue
            images.append(ImageRegions(encoded, groups, cancelled=job.cancelled.is_set))
            owners.append(i)
        by_mode: dict[bool, list[int]] = {}
        for place, i in enumerate(owners):
            by_mode.setdefault(jobs[i].multimask_output, []).append(place)
        for multimask_output, places in by_mode.items():
            answers = worker.engine.caption_images([images[p] for p in places], multimask_output)
            for place, answer in zip(places, answers):
                results[owners[place]] = answer
        return results


@dataclass(kw_only=True)
class AnythingJob(Job):
    """Everything in one image, captioned."""

    image_id: str
    picture: Image.Image
    options: AnythingOptions

    def run(self, worker: ModelWorker, jobs: list[AnythingJob]) -> list[list[RegionCaption] | None]:
        try:
            return [worker.engine.anything(worker.encoded(self.image_id, self.picture), self.options,
                                           cancelled=self.cancelled.is_set)]
        except Cancelled:
            return [None]


@dataclass(kw_only=True)
class VideoJob(Job):
    """Objects followed and captioned through one video."""

    data: bytes
    regions: list[RegionPrompt] | None
    frame: int
    options: VideoOptions
    anything: AnythingOptions | None = None

    def run(self, worker: ModelWorker, jobs: list[VideoJob]) -> list[list[dict] | None]:
        from ..video import io as video_io
        from ..video.captioner import VideoCaptioner

        video = VideoCaptioner(worker.model, self.options, worker.tracker, self.anything, worker.engine.chunk_size)
        try:
            for _ in video.run(video_io.read_frames(self.data), regions=self.regions, frame=self.frame,
                               anything=self.anything is not None, cancelled=self.cancelled.is_set):
                pass
        except Cancelled:
            return [None]
        return [[track.to_dict() for track in video.tracks]]


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


class ModelWorker:
    """Runs jobs on one thread, first in, first out, from a queue of at most `queue_size` jobs."""

    def __init__(self, model: RegionModel, queue_size: int = 32, cache_bytes: int = 512 * 2**20,
                 chunk_size: int = GenerationOptions.chunk_size, tracker: Tracker | None = None):
        self.model = model
        self.engine = RegionEngine(model, chunk_size)
        self.tracker = tracker or ReprompterTracker(model)  # each video follows its objects with a fresh one
        self.queue_size = queue_size
        self.embeddings = LruBytes(cache_bytes, lambda encoded: encoded.nbytes)
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

    def _next_batch(self) -> list[Job] | None:
        with self._condition:
            while not self._jobs and not self._stopped:
                self._condition.wait()
            if self._stopped:
                return None
            batch = [self._jobs.popleft()]
            if batch[0].batches:  # later jobs that can share the first one's model steps
                for job in list(self._jobs):
                    if len(batch) >= MAX_BATCH_IMAGES:
                        break
                    if type(job) is type(batch[0]):
                        self._jobs.remove(job)
                        batch.append(job)
            return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
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

    def encoded(self, image_id: str, picture: Image.Image) -> EncodedImages:
        """The image's encoding, from the cache when the same image was seen (on the worker thread)."""
        cached = self.embeddings.get(image_id)
        if cached is None:
            cached = self.model.encode([picture])
            self.embeddings.put(image_id, cached)
        return cached
