"""The SAM-Captioner baseline: SAM segments each prompt into up to 3 masks; each mask's box is cropped from the
image and captioned by an off-the-shelf Hugging Face captioner (BLIP, BLIP-2, GIT, InstructBLIP, ...).

Unlike SCA, the captioner re-encodes every crop: the cost grows with regions x masks, which is what the
benchmark compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, SamModel

from ..data.sam_frame import SamFrame
from ..errors import InputError
from ..geometry import mask_box
from ..options import GenerationOptions
from .hub import ModelSource
from .prompts import Prompts
from .region_model import EncodedImages, RegionModel, RegionOutputs
from .vision_attention import encoder_for

PROMPTABLE = {"blip-2", "instructblip", "git", "blip"}
"""Captioner families that take a text prompt (BLIP and GIT continue it; BLIP-2 and InstructBLIP answer it)."""

CHAIN_OF_THOUGHT = ("Question: What is this? Answer:", "Question: Describe the {answer} in detail. Answer:")
"""The visual chain-of-thought prompts: first name the region, then describe it by that name."""


@dataclass
class CropCaptioner:
    """An image-to-text model and its processor, captioning PIL crops in batches.

    prompt: text the model is given with every crop (InstructBLIP needs one; BLIP-2 answers it; BLIP and
        GIT continue it). chain_of_thought: ask what the crop shows, then describe it by that name.
    """

    model: PreTrainedModel
    processor: object
    prompt: str | None = None
    chain_of_thought: bool = False
    max_new_tokens: int = 20
    num_beams: int = 1
    batch_size: int = 16
    generate_options: dict = field(default_factory=dict)  # more `generate` arguments, e.g. min_new_tokens

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype = torch.float32, device="cpu", **options):
        """A captioner from a folder or a hub id (`org/name[@revision]`)."""
        source = ModelSource.parse(name_or_path)
        if source.file("config.json") is None:
            raise InputError(f"{source} is not a model folder (no config.json)")
        try:
            processor = AutoProcessor.from_pretrained(source.location, **source.pretrained_kwargs)
            model = AutoModelForImageTextToText.from_pretrained(source.location, dtype=dtype,
                                                                **source.pretrained_kwargs)
        except (OSError, ValueError) as error:
            raise source.failure("load the captioner", error) from error
        return cls(model.to(device).eval(), processor, **options)

    @property
    def family(self) -> str:
        return self.model.config.model_type

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
        inputs = {k: v.to(self.model.device) for k, v in inputs.items() if k != "token_type_ids"}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                     do_sample=False, **self.generate_options)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and output.shape[1] >= prompt_ids.shape[1] and torch.equal(
            output[:, : prompt_ids.shape[1]], prompt_ids
        ):
            output = output[:, prompt_ids.shape[1] :]  # decoder-only captioners echo their prompt
        captions = [c.strip() for c in self.processor.batch_decode(output, skip_special_tokens=True)]
        if texts is None:
            return captions
        # Some (BLIP) echo the prompt after re-tokenizing it: cut it off by its text.
        echoed = [t.strip() for t in self.processor.batch_decode(self.processor.tokenizer(texts)["input_ids"],
                                                                 skip_special_tokens=True)]
        return [c[len(e):].strip() if e and c.startswith(e) else c for c, e in zip(captions, echoed)]

def crop_box(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The mask's tight box cut from the image (the whole image for an empty mask)."""
    box = mask_box(mask)
    if box is None:
        return image
    return image.crop(tuple(int(round(v)) for v in box))


class SamCaptioner(RegionModel):
    """SAM + a `CropCaptioner`: one caption per SAM mask (the crop of its box), so 3 candidates per region with
    multimask output.

    sam: transformers' `SamModel`, left as it is (on a CPU its encoder runs through a blocked view that shares its
    weights, as SCA's does: a fair comparison). The image encoder runs once per image; prompts go through SAM's
    decoder in chunks of `chunk_size` regions, and their crops through the captioner in its batches.
    """

    needs_pictures = True

    def __init__(self, sam: SamModel, captioner: CropCaptioner, chunk_size: int = 16):
        self.sam = sam.eval()
        self.captioner = captioner
        self.chunk_size = chunk_size
        self.frame = SamFrame.from_config(sam.config)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def dtype(self) -> torch.dtype:
        return self.sam.dtype

    @torch.no_grad()
    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device, self.dtype)
        return encoder_for(self.sam.vision_encoder, pixel_values.device)(pixel_values).last_hidden_state

    @torch.no_grad()
    def segment(self, encoded: EncodedImages, prompts: Prompts, multimask_output: bool = True):
        """`(B, R, M)` IoU scores and `(B, R, M, h, w)` low-res mask logits, R regions in chunks."""
        if prompts.masks is not None:
            raise InputError("SAM-Captioner takes box and point prompts, not mask prompts")
        prompts = prompts.to(self.device, self.dtype)
        scores, masks = [], []
        for start in range(0, prompts.num_regions, self.chunk_size):
            chunk = prompts.take(slice(start, start + self.chunk_size)).as_sam_inputs()
            chunk.pop("input_masks")
            output = self.sam(image_embeddings=encoded.embeddings, multimask_output=multimask_output, **chunk)
            scores.append(output.iou_scores)
            masks.append(output.pred_masks)
        return torch.cat(scores, 1), torch.cat(masks, 1)

    @torch.no_grad()
    def caption(self, encoded: EncodedImages, prompts: Prompts, tasks: Sequence[str] | None = None,
                multimask_output: bool = True) -> RegionOutputs:
        scores, low_res = self.segment(encoded, prompts, multimask_output)
        valid = prompts.valid.tolist() if prompts.valid is not None else None
        candidates = []
        for b, picture in enumerate(encoded.pictures):
            regions = [r for r in range(prompts.num_regions) if valid is None or valid[b][r]]
            crops = [crop_box(picture, mask) for r in regions for mask in self._full_masks(low_res[b, r], encoded, b)]
            captions = iter(self.captioner(crops))
            per_region = {r: [next(captions) for _ in range(low_res.shape[2])] for r in regions}
            candidates.append([per_region.get(r, []) for r in range(prompts.num_regions)])
        return RegionOutputs(scores, low_res, candidates)

    @torch.no_grad()
    def describe(self, encoded: EncodedImages, prompts: Prompts, masks: torch.Tensor,
                 tasks: Sequence[str] | None = None) -> list[list[str]]:
        """The crop of each given mask, captioned (SAM does not run again)."""
        described = []
        for b, picture in enumerate(encoded.pictures):
            crops = [crop_box(picture, self._full_masks(mask[None], encoded, b)[0]) for mask in masks[b]]
            described.append(self.captioner(crops))
        return described

    def _full_masks(self, low_res: torch.Tensor, encoded: EncodedImages, index: int) -> np.ndarray:
        """`(M, h, w)` low-res logits of one region → `(M, H, W)` boolean masks at the image's size."""
        return self.frame.masks_to_original(low_res[None], encoded.framed[index])[0].cpu().numpy()

    def settings(self) -> dict:
        captioner = self.captioner
        return {"model": "SamCaptioner", "captioner": captioner.family, "prompt": captioner.prompt,
                "chain_of_thought": captioner.chain_of_thought, "dtype": str(self.dtype),
                "max_new_tokens": captioner.max_new_tokens, "num_beams": captioner.num_beams}


def build_sam_captioner(
    sam: str = "facebook/sam-vit-huge",
    captioner: str = "Salesforce/blip2-opt-2.7b",
    prompt: str | None = None,
    chain_of_thought: bool = False,
    chunk_size: int = 16,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generation: GenerationOptions | None = None,
) -> SamCaptioner:
    """SAM and an image captioner, each a folder or a hub id (`org/name[@revision]`)."""
    generation = (generation or GenerationOptions()).check()
    source = ModelSource.parse(sam)
    if source.file("config.json") is None:
        raise InputError(f"{source} is not a model folder (no config.json)")
    try:
        sam_model = SamModel.from_pretrained(source.location, dtype=dtype, **source.pretrained_kwargs).to(device)
    except (OSError, ValueError) as error:
        raise source.failure("load SAM", error) from error
    crops = CropCaptioner.from_pretrained(captioner, dtype=dtype, device=device, prompt=prompt,
                                          chain_of_thought=chain_of_thought, max_new_tokens=generation.max_new_tokens,
                                          num_beams=generation.num_beams, batch_size=batch_size,
                                          generate_options=dict(generation.extra))
    return SamCaptioner(sam_model, crops, chunk_size)
