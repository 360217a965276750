"""Reading and writing videos with PyAV (its wheels carry FFmpeg's codecs): frames stream one at a time, so memory
does not grow with the video's length; a written video appears whole or not at all."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..files import publish, temporary_beside

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
CODECS = {".webm": ("libvpx-vp9", "libvpx"), ".avi": ("mpeg4",)}
"""Codecs each written suffix takes, best first; other suffixes take H.264 (or MPEG-4)."""
DEFAULT_CODECS = ("libx264", "mpeg4")
STILL_IMAGE_FORMATS = ("image2",)
"""FFmpeg's demuxers of still images (besides the `*_pipe` ones): a picture is not a one-frame video (an animated GIF,
read by the `gif` demuxer, is a video)."""


def codec_for(path: str | Path) -> str:
    """The codec a video written to `path` is encoded with, chosen by its suffix; refused when this build has none."""
    import av

    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"{path} must end in one of {', '.join(VIDEO_SUFFIXES)} (the video's format)")
    choices = CODECS.get(suffix, DEFAULT_CODECS)
    for codec in choices:
        if codec in av.codecs_available:
            return codec
    raise InputError(f"this FFmpeg build has no {' or '.join(choices)} encoder for {suffix} videos: write .mp4 instead")


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int | None  # what the container says (None when it does not)


Source = str | Path | bytes
"""A video: its path, or its bytes (an upload)."""


def _name(source: Source) -> str:
    return "the upload" if isinstance(source, bytes | bytearray) else str(source)


def _open(source: Source):
    import av

    if isinstance(source, bytes | bytearray):
        target = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{path} is a folder, not a video" if path.is_dir() else f"video not found: {path}")
        target = str(path)
    try:
        container = av.open(target)
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise InputError(f"cannot read {_name(source)} as a video ({type(error).__name__})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{_name(source)} holds no video stream")
    name = container.format.name
    if name.endswith("_pipe") or name in STILL_IMAGE_FORMATS:
        container.close()
        raise InputError(f"{_name(source)} is a still image ({name.removesuffix('_pipe')}), not a video: caption it with "
                         "sca caption or POST /api/images")
    return container


def video_info(source: Source, count_frames: bool = False) -> VideoInfo:
    """Size, frame rate and frame count (from the container; `count_frames` counts the packets where it is silent
    or not to be trusted, as for uploads, without decoding)."""
    import av

    container = _open(source)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise InputError(f"{_name(source)}: the video stream has no frame size")
        frames = stream.frames or None
        if count_frames:
            try:
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            except av.error.FFmpegError as error:
                raise InputError(f"cannot read {_name(source)} as a video ({type(error).__name__})") from None
        return VideoInfo(width, height, float(rate), frames)
    finally:
        container.close()


def read_frames(source: Source, max_frames: int | None = None) -> Iterator[tuple[int, Image.Image]]:
    """`(index, RGB frame)` one at a time; a frame the codec cannot decode stops with `InputError`."""
    import av

    container = _open(source)
    try:
        stream = container.streams.video[0]
        index = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and index >= max_frames:
                    return
                yield index, frame.to_image().convert("RGB")
                index += 1
        except av.error.FFmpegError as error:
            raise InputError(f"cannot decode frame {index} of {_name(source)} ({type(error).__name__})") from None
        if index == 0:
            raise InputError(f"{_name(source)} holds no frames")
    finally:
        container.close()


class VideoWriter:
    """Frames into an H.264 (or MPEG-4) video, written to a hidden file next to `path` and renamed when closed."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int):
        import av

        self.path = Path(path)
        codec = codec_for(self.path)
        self.temporary = temporary_beside(self.path)
        self.container = av.open(str(self.temporary), "w")
        try:
            self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            self.stream.width, self.stream.height = width + width % 2, height + height % 2  # yuv420p wants even sides
            self.stream.pix_fmt = "yuv420p"
        except BaseException:
            self.container.close()
            self.temporary.unlink(missing_ok=True)
            raise

    def write(self, picture: Image.Image) -> None:
        import av

        pixels = np.asarray(picture.convert("RGB"))
        if pixels.shape[:2] != (self.stream.height, self.stream.width):
            padded = np.zeros((self.stream.height, self.stream.width, 3), np.uint8)
            padded[: pixels.shape[0], : pixels.shape[1]] = pixels
            pixels = padded
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
            self.container.mux(packet)

    def close(self, keep: bool = True) -> None:
        """Finish the video and put it in place (`keep`), or throw it away; a failure on the way throws it away."""
        try:
            if keep:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        except BaseException:
            keep = False
            raise
        finally:
            self.container.close()
            if keep:
                publish(self.temporary, self.path)
            else:
                self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(keep=kind is None)


def write_video(path: str | Path, frames: list[Image.Image], fps: float = 10.0) -> Path:
    """A whole list of frames as a video (for tests and worlds)."""
    with VideoWriter(path, fps, frames[0].width, frames[0].height) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
