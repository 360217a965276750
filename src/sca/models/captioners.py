"""Describers of a region of a picture, given its mask: what SAM-Captioner pairs with a segmenter.

Three ways, chosen by the model's class (its config's `model_type` and processor), never by its name:
- `CropCaptioner`: an image captioner (BLIP, BLIP-2, GIT, InstructBLIP, ...) captions the crop of the mask's box;
- `Florence2Captioner`: Florence-2 describes the region from its box as location tokens, on the whole image
  (its `<REGION_TO_DESCRIPTION>` task and its own post-processing);
- `ChatCaptioner`: a chat VLM (LLaVA, Gemma 3, Idefics 3 / SmolVLM, ...) gets a focal prompt, as the Describe
  Anything model showed: the whole image with the region outlined, the crop around it with some context, and
  a request to describe the outlined region (`detail`: brief or detailed; `prompt` replaces the text).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel

from ..errors import InputError
from ..geometry import mask_box
from ..options import DECODER_CHUNK, GenerationOptions
from .hub import ModelSource

CHAIN_OF_THOUGHT = ("Question: What is this? Answer:", "Question: Describe the {answer} in detail. Answer:")
"""The visual chain-of-thought prompts: first name the region, then describe it by that name."""

FOCAL_PROMPTS = {
    "brief": "The first image shows a scene with one region outlined in red; the second image is a close-up of that "
             "region. In a short phrase, what is in the outlined region?",
    "detailed": "The first image shows a scene with one region outlined in red; the second image is a close-up of "
                "that region. Describe the object or area in the outlined region in detail: what it is, its colour, "
                "shape and texture, and what it is doing.",
}
TRACK_PROMPTS = {
    "brief": "These images are close-ups of one object, outlined in red, at moments of a video. In a short phrase, "
             "what is the object?",
    "detailed": "These images are close-ups of one object, outlined in red, at moments of a video. Describe the object "
                "in detail: what it is, its colour, shape and texture, and what it does over the video.",
}
OUTLINE = (255, 0, 0)
CONTEXT = 0.5
"""The focal crop: the region's box grown by this share of its side on each side (context around the region)."""
CROP_FAMILIES = {"blip", "blip-2", "git", "instructblip", "kosmos-2"}
"""Image captioners that take crops (and a text prompt to continue or answer at most)."""


@dataclass
class Captioner(ABC):
    """A model and its processor, and how to decode."""

    model: PreTrainedModel
    processor: object
    max_new_tokens: int = GenerationOptions.max_new_tokens
    num_beams: int = GenerationOptions.num_beams
    batch_size: int = DECODER_CHUNK
    prompt: str | None = None
    generate_options: dict = field(default_factory=dict)  # more `generate` arguments, e.g. min_new_tokens

    @property
    def family(self) -> str:
        return self.model.config.model_type

    @abstractmethod
    def describe(self, picture: Image.Image, masks: Sequence[np.ndarray]) -> list[str]:
        """One caption for each `(H, W)` boolean mask of the picture."""

    def describe_views(self, views: Sequence[tuple[Image.Image, np.ndarray]]) -> str | None:
        """One caption for one object seen in several pictures (its views through a video), each `(picture, mask)`;
        None where the captioner looks at one picture at a time."""
        return None

    def settings(self) -> dict:
        return {"captioner": self.family, "kind": type(self).__name__, "prompt": self.prompt,
                "max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}

    def _run(self, inputs: dict) -> torch.Tensor:
        inputs = {k: v.to(self.model.device) for k, v in inputs.items() if k != "token_type_ids"}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                     do_sample=False, **self.generate_options)
        prompt_ids = inputs.get("input_ids")
        if (prompt_ids is not None and not self.model.config.is_encoder_decoder
                and output.shape[1] >= prompt_ids.shape[1] and torch.equal(output[:, : prompt_ids.shape[1]], prompt_ids)):
            output = output[:, prompt_ids.shape[1] :]  # decoder-only models echo their prompt
        return output


@dataclass
class CropCaptioner(Captioner):
    """An image captioner on the crop of each mask's box. prompt: text given with every crop (InstructBLIP needs
    one; BLIP-2 answers it; BLIP and GIT continue it). chain_of_thought: ask what the crop shows, then describe it
    by that name."""

    chain_of_thought: bool = False

    def describe(self, picture: Image.Image, masks: Sequence[np.ndarray]) -> list[str]:
        return self(BoxCrops(picture, masks))

    def settings(self) -> dict:
        return {**super().settings(), "chain_of_thought": self.chain_of_thought}

    @torch.no_grad()
    def __call__(self, crops: Sequence[Image.Image]) -> list[str]:
        if not crops:
            return []
        if not self.chain_of_thought:
            return self._generate(crops, self.prompt)
        names = self._generate(crops, CHAIN_OF_THOUGHT[0])
        return self._generate(crops, [CHAIN_OF_THOUGHT[1].format(answer=n or "object") for n in names])

    def _generate(self, crops: Sequence[Image.Image], prompt: str | list[str] | None) -> list[str]:
        captions = []
        for start in range(0, len(crops), self.batch_size):
            batch = list(crops[start : start + self.batch_size])
            prompts = prompt[start : start + len(batch)] if isinstance(prompt, list) else prompt
            captions += self._generate_batch(batch, prompts)
        return captions

    def _generate_batch(self, crops: list[Image.Image], prompt: str | list[str] | None) -> list[str]:
        texts = None
        if prompt is not None or self.family in ("blip-2", "instructblip"):
            # BLIP-2 and InstructBLIP read the image only through the `<image>` ids the processor puts first.
            texts = [prompt or ""] * len(crops) if not isinstance(prompt, list) else prompt
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and texts is not None:
            tokenizer.padding_side = "left"  # generation continues every row from its last real token
        inputs = self.processor(images=crops, text=texts, return_tensors="pt", **({"padding": True} if texts else {}))
        captions = [c.strip() for c in self.processor.batch_decode(self._run(dict(inputs)), skip_special_tokens=True)]
        if texts is None:
            return captions
        # Some (BLIP) echo the prompt after re-tokenizing it: cut it off by its text.
        echoed = [t.strip() for t in self.processor.batch_decode(self.processor.tokenizer(texts)["input_ids"],
                                                                 skip_special_tokens=True)]
        return [c[len(e):].strip() if e and c.startswith(e) else c for c, e in zip(captions, echoed)]


@dataclass
class Florence2Captioner(Captioner):
    """Florence-2's region captioning: the mask's box as location tokens (1,000 bins a side) on the whole image."""

    TASK = "<REGION_TO_DESCRIPTION>"

    def __post_init__(self):
        try:  # the processor's post-processor must know how to read the task's answer; it is refused here, not later
            self.processor.post_process_generation("</s>", task=self.TASK, image_size=(1, 1))
        except (ValueError, KeyError, AttributeError) as error:
            raise InputError(f"this Florence-2 processor cannot read {self.TASK} answers ({error}): its "
                             "processor_config.json lacks the post_processor_config of the published checkpoints; "
                             "copy it from one of them") from None

    @torch.no_grad()
    def describe(self, picture: Image.Image, masks: Sequence[np.ndarray]) -> list[str]:
        prompts = [self.TASK + location_tokens(mask_box(mask) or [0, 0, picture.width, picture.height], picture.size)
                   for mask in masks]
        captions = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            inputs = self.processor(text=batch, images=[picture] * len(batch), return_tensors="pt", padding=True)
            texts = self.processor.batch_decode(self._run(dict(inputs)), skip_special_tokens=False)
            for text in texts:
                parsed = self.processor.post_process_generation(text, task=self.TASK, image_size=picture.size)
                captions.append(str(parsed.get(self.TASK, "")).strip())
        return captions


def location_tokens(box: Sequence[float], size: tuple[int, int]) -> str:
    """A box in pixels → Florence-2's `<loc_x1><loc_y1><loc_x2><loc_y2>` (each coordinate in 1,000 bins)."""
    width, height = size
    bins = [min(999, max(0, int(v / side * 1000))) for v, side in zip(box, (width, height, width, height))]
    return "".join(f"<loc_{b}>" for b in bins)


@dataclass
class ChatCaptioner(Captioner):
    """A chat VLM given a focal prompt per region: the picture with the region outlined, and the crop around it."""

    detail: str = "brief"

    def describe(self, picture: Image.Image, masks: Sequence[np.ndarray]) -> list[str]:
        captions = []
        for start in range(0, len(masks), self.batch_size):
            conversations = [focal_prompt(picture, mask) for mask in masks[start : start + self.batch_size]]
            captions += self._ask(conversations)
        return captions

    def text(self) -> str:
        return self.prompt or FOCAL_PROMPTS[self.detail]

    @torch.no_grad()
    def describe_views(self, views: Sequence[tuple[Image.Image, np.ndarray]]) -> str | None:
        """One focal prompt with the object's outlined close-up in each view."""
        crops = [focal_prompt(picture, mask)[1] for picture, mask in views]
        content = [{"type": "image"} for _ in crops] + [{"type": "text", "text": TRACK_PROMPTS[self.detail]}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = self.processor(text=[text], images=[crops], return_tensors="pt")
        return self.processor.batch_decode(self._run(dict(inputs)), skip_special_tokens=True)[0].strip()

    @torch.no_grad()
    def _ask(self, images: list[tuple[Image.Image, Image.Image]]) -> list[str]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": self.text()}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"
        inputs = self.processor(text=[text] * len(images), images=[list(pair) for pair in images], return_tensors="pt",
                                padding=True)
        return [c.strip() for c in self.processor.batch_decode(self._run(dict(inputs)), skip_special_tokens=True)]

    def settings(self) -> dict:
        return {**super().settings(), "detail": self.detail, "text": self.text()}


def focal_prompt(picture: Image.Image, mask: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """The whole picture with the region's outline drawn, and the crop of the region's box grown by `CONTEXT` (also
    outlined): what a chat VLM is shown to describe one region."""
    pixels = np.array(picture.convert("RGB"))
    box = mask_box(mask)
    if box is not None:
        # the outline lies within `width` of the mask: it is drawn within the mask's box grown by that much
        width = max(2, round(min(picture.size) / 150))
        x1, y1, x2, y2 = (int(v) for v in box)
        window = (slice(max(0, y1 - width), y2 + width), slice(max(0, x1 - width), x2 + width))
        pixels[window][outline(mask[window], width)] = OUTLINE
    outlined = Image.fromarray(pixels)
    del pixels  # a large photo's copy: the outlined picture is the one kept
    x1, y1, x2, y2 = box or [0, 0, picture.width, picture.height]
    grow_x, grow_y = (x2 - x1) * CONTEXT, (y2 - y1) * CONTEXT
    left, top = int(max(0, x1 - grow_x)), int(max(0, y1 - grow_y))
    right = max(left + 1, int(min(picture.width, x2 + grow_x)))
    bottom = max(top + 1, int(min(picture.height, y2 + grow_y)))
    return outlined, outlined.crop((left, top, right, bottom))


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels within `width` steps (4-connected) of the mask's border, inside or out; beyond the array the
    mask is False."""
    grown, shrunk = mask.copy(), mask.copy()
    for _ in range(width):
        padded = np.pad(grown, 1)
        grown = padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
        padded = np.pad(shrunk, 1)
        shrunk = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return grown & ~shrunk


class BoxCrops(Sequence):
    """Each mask's tight box cut from the picture when it is read: captioners take a batch at a time, so a chunk's
    crops of a large photo (up to the whole picture each, 75 MB at 25 megapixels) are never all held at once."""

    def __init__(self, picture: Image.Image, masks: Sequence[np.ndarray]):
        self.picture, self.masks = picture, masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return BoxCrops(self.picture, self.masks[index])
        return crop_box(self.picture, self.masks[index])


def crop_box(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The mask's tight box cut from the image (the whole image for an empty mask)."""
    box = mask_box(mask)
    if box is None:
        return image
    return image.crop(tuple(int(round(v)) for v in box))


def captioner_class(model: PreTrainedModel, processor) -> type[Captioner]:
    """Which way a model describes regions, from its class: Florence-2, a chat VLM (a processor with a chat
    template, not one of the crop captioners), or a crop captioner."""
    family = model.config.model_type
    if family == "florence2":
        return Florence2Captioner
    if family not in CROP_FAMILIES and getattr(processor, "chat_template", None):
        return ChatCaptioner
    return CropCaptioner


def load_captioner(name_or_path: str, dtype: torch.dtype = torch.float32, device="cpu", **options) -> Captioner:
    """A captioner from a folder or a hub id (`org/name[@revision]`); options its class does not take (a chat
    VLM's `detail` for a crop captioner, say) are refused with the list of those it takes."""
    from .segmenters import FAMILIES as SEGMENTER_TYPES

    source = ModelSource.parse(name_or_path)
    model_type = source.required_config().get("model_type")
    if model_type in SEGMENTER_TYPES:
        raise InputError(f"{source} is a segmenter ({model_type}), not a captioner: pass it as the segmenter (--sam, "
                         "model.sam), and a captioner as --captioner")
    with source.loading("load the captioner"):
        processor = AutoProcessor.from_pretrained(source.location, **source.pretrained_kwargs)
        model = AutoModelForImageTextToText.from_pretrained(source.location, dtype=dtype, **source.pretrained_kwargs)
    cls = captioner_class(model, processor)
    accepted = set(cls.__dataclass_fields__) - {"model", "processor"}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise InputError(f"a {cls.__name__} ({model.config.model_type}) takes no option {unknown[0]!r}")
    return cls(model.to(device).eval(), processor, **given)
