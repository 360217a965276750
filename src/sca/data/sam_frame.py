"""SAM's input frame: images resized (longest side → S), normalised and padded to S × S; prompts and
masks mapped into that frame and back.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from transformers import SamImageProcessorPil

from ..errors import InputError
from ..geometry import positive_boxes

FULL_SIZE_BYTES = 128 * 2**20
"""Float logits upsampled to an image's size at a time: a 25-megapixel mask alone is 100 MB."""
MASK_PROMPT_LOGIT = 10.0
"""Binary mask prompts become logits of ±this value, the range SAM's own low-res logits take."""


def load_image(image: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """A path, a PIL image or an `(H, W, 3)` uint8 array → an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")  # never modified here: no full-size copy
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise InputError(f"an image array must be (H, W, 3), got shape {image.shape}")
        if image.dtype != np.uint8:
            raise InputError(f"an image array must hold uint8 values 0-255, got {image.dtype}")
        return Image.fromarray(image)
    path = Path(image)
    if not path.is_file():
        raise InputError(f"{path} is a folder, not an image" if path.is_dir() else f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                return opened.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{path} is larger than {Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, the limit that "
                         f"guards against decompression bombs: resize it first ({error})") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputError(f"cannot read {path} as an image: {error}") from error


def longest_side_shape(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """`(H, W)` scaled so that its longer side is `longest`, rounded as SAM's processor rounds."""
    scale = longest / max(size)
    return tuple(int(side * scale + 0.5) for side in size)


@dataclass
class FramedImage:
    """An image in SAM's frame.

    pixel_values: `(3, S, S)` normalised and padded.
    original_size: `(H, W)` of the image as given.
    input_size: `(h, w)` after resizing, before padding (h, w ≤ S).
    """

    pixel_values: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    def scale(self, coords: torch.Tensor) -> torch.Tensor:
        """Original-pixel xy coordinates `(..., 2k)` → the S × S frame (the same scale SAM's processor uses)."""
        coords = torch.as_tensor(coords, dtype=torch.float32).clone()
        (old_h, old_w), (new_h, new_w) = self.original_size, self.input_size
        coords[..., 0::2] *= new_w / old_w
        coords[..., 1::2] *= new_h / old_h
        return coords


class SamFrame:
    """Maps images, prompts and masks between original pixels and a SAM model's input frame."""

    def __init__(self, image_size: int, embedding_size: int):
        self.image_size = image_size
        self.mask_size = 4 * embedding_size
        self.processor = SamImageProcessorPil(
            size={"longest_edge": image_size},
            pad_size={"height": image_size, "width": image_size},
            mask_size={"longest_edge": self.mask_size},
            mask_pad_size={"height": self.mask_size, "width": self.mask_size},
        )

    @classmethod
    def from_config(cls, config) -> SamFrame:
        """The frame of an SCA config: SAM's (padded) or, for one that says `input_frame = "stretch"`, SAM 2's."""
        prompt = config.prompt_encoder_config
        embedding = getattr(prompt, "image_embedding_size", None) or prompt.image_size // prompt.patch_size
        frame = StretchFrame if getattr(config, "input_frame", "pad") == "stretch" else SamFrame
        return frame(prompt.image_size, embedding)

    def placement(self, original_size: tuple[int, int]) -> FramedImage:
        """Where an image of `(H, W)` lands in the frame, without its pixels: enough to check and scale prompts."""
        height, width = longest_side_shape(original_size, self.image_size)
        return FramedImage(torch.empty(0), tuple(original_size), (height, width))

    def frame(self, image: Image.Image) -> FramedImage:
        original_size = (image.height, image.width)
        height, width = longest_side_shape(original_size, self.image_size)
        if min(height, width) < 1:
            raise InputError(f"the image is {image.width}x{image.height}: resized to the model's {self.image_size}-pixel "
                             "input its shorter side would be under one pixel; crop it, or pad it to a squarer shape")
        if max(original_size) > self.image_size:
            # The processor's own resize (PIL, bilinear) done on the PIL image before it makes its arrays: the same
            # pixels, without a few full-size copies of a large photo (~0.2 GB at 25 megapixels).
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        batch = self.processor(images=image, return_tensors="pt")
        return FramedImage(
            pixel_values=batch["pixel_values"][0],
            original_size=original_size,
            input_size=tuple(int(v) for v in batch["reshaped_input_sizes"][0]),
        )

    def mask_prompts(self, masks: np.ndarray | torch.Tensor, framed: FramedImage) -> torch.Tensor:
        """`(R, H, W)` binary masks in original pixels → `(R, 4h', 4w')` logits in the low-res frame."""
        return self.low_res_masks(masks, framed) * (2 * MASK_PROMPT_LOGIT) - MASK_PROMPT_LOGIT

    def low_res_masks(self, masks: np.ndarray | torch.Tensor, framed: FramedImage) -> torch.Tensor:
        """`(R, H, W)` binary masks in original pixels → `(R, 4h', 4w')` 0/1 floats in the low-res frame,
        where SAM's decoder predicts its masks (mask prompts and segmentation targets)."""
        masks = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
        if masks.shape[0] == 0:
            return masks.new_zeros(0, self.mask_size, self.mask_size)
        height, width = longest_side_shape(framed.original_size, self.mask_size)
        resized = F.interpolate(masks[:, None], (height, width), mode="bilinear", antialias=True)[:, 0]
        padded = F.pad(resized, (0, self.mask_size - width, 0, self.mask_size - height))
        return (padded > 0.5).float()

    def masks_to_original(self, low_res_masks: torch.Tensor, framed: FramedImage) -> torch.Tensor:
        """`(R, M, h, w)` low-res logits → `(R, M, H, W)` boolean masks at the original size.

        SAM's post-processing (transformers' `post_process_masks`): upsample to the padded frame, crop the image
        out of the padding, resize to the original size, threshold at 0 — with the second resize skipped when it
        would be the identity (the image already had the frame's size), which changes no value.
        """
        return self.logits_to_original(low_res_masks, framed) > 0

    def logits_to_original(self, low_res_masks: torch.Tensor, framed: FramedImage) -> torch.Tensor:
        """`(R, M, h, w)` low-res logits → `(R, M, H, W)` float logits at the original size (`masks_to_original`
        before its threshold)."""
        logits = F.interpolate(low_res_masks.float(), (self.image_size, self.image_size), mode="bilinear",
                               align_corners=False)
        height, width = framed.input_size
        logits = logits[..., :height, :width]
        if (height, width) != tuple(framed.original_size):
            logits = F.interpolate(logits, framed.original_size, mode="bilinear", align_corners=False)
        return logits

    def _pieces(self, low_res_masks: torch.Tensor, framed: FramedImage, max_bytes: int | None) -> Iterator[torch.Tensor]:
        """`(N, h, w)` → `(n, 1, h, w)` pieces whose logits at the original size fit within `max_bytes`."""
        height, width = framed.original_size
        count = max(1, (FULL_SIZE_BYTES if max_bytes is None else max_bytes) // (4 * height * width))
        for start in range(0, len(low_res_masks), count):
            yield low_res_masks[start : start + count, None]

    def masks_to_original_in_pieces(self, low_res_masks: torch.Tensor, framed: FramedImage,
                                    max_bytes: int | None = None) -> Iterator[torch.Tensor]:
        """`(N, h, w)` low-res logits → `(n, H, W)` boolean masks at the original size, as many at a time as keep
        their float logits within `max_bytes` (default `FULL_SIZE_BYTES`: 32 of a 1024² image, one of a
        25-megapixel photo)."""
        for piece in self._pieces(low_res_masks, framed, max_bytes):
            yield self.masks_to_original(piece, framed)[:, 0]

    def boxes_at_original(self, low_res_masks: torch.Tensor, framed: FramedImage) -> torch.Tensor:
        """`(N, h, w)` low-res logits → `(N, 4)` the xyxy boxes of their masks at the original size (zeros for an
        empty mask), made in the same bounded pieces, from the logits' row and column maxima."""
        finite = bool(torch.isfinite(low_res_masks).all())  # then so are the interpolated logits: no NaN to look for
        pieces = [positive_boxes(self.logits_to_original(piece, framed)[:, 0], may_hold_nan=not finite)
                  for piece in self._pieces(low_res_masks, framed, None)]
        return torch.cat(pieces) if pieces else torch.zeros(0, 4)


class FullSizeMasks(Sequence):
    """`(N, h, w)` low-res logits read as N `(H, W)` boolean numpy masks at the original size, each made when it is
    read: a captioner given a chunk's masks of a 25-megapixel photo holds one at a time, not gigabytes."""

    def __init__(self, frame: SamFrame, low_res_masks: torch.Tensor, framed: FramedImage):
        self.frame, self.low_res_masks, self.framed = frame, low_res_masks, framed

    def __len__(self) -> int:
        return len(self.low_res_masks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return FullSizeMasks(self.frame, self.low_res_masks[index], self.framed)
        return self.frame.masks_to_original(self.low_res_masks[index][None, None], self.framed)[0, 0].cpu().numpy()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class StretchFrame(SamFrame):
    """The SAM 2 family's frame: the image resized to S × S (its aspect ratio not kept), normalised with ImageNet's
    mean and spread, no padding; masks come back by one resize from the low-res square to the original size."""

    def frame(self, image: Image.Image) -> FramedImage:
        resized = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        pixels = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        return FramedImage(pixels, (image.height, image.width), (self.image_size, self.image_size))

    def low_res_masks(self, masks: np.ndarray | torch.Tensor, framed: FramedImage) -> torch.Tensor:
        masks = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
        if masks.shape[0] == 0:
            return masks.new_zeros(0, self.mask_size, self.mask_size)
        resized = F.interpolate(masks[:, None], (self.mask_size, self.mask_size), mode="bilinear", antialias=True)
        return (resized[:, 0] > 0.5).float()

    def logits_to_original(self, low_res_masks: torch.Tensor, framed: FramedImage) -> torch.Tensor:
        return F.interpolate(low_res_masks.float(), framed.original_size, mode="bilinear", align_corners=False)
