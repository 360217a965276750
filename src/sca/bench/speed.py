"""Memory and speed of region captioning: SCA (encode once, decode many) against SAM-Captioner (a crop per mask).

Real-size architectures are built from configs with random weights when no weights are given: compute and
memory do not depend on weight values, and every caption is forced to its full length (`min_new_tokens`), so
the figures are those of the published models. Each case runs in its own process, so that peak memory (CPU:
the process's maximum resident set; GPU: torch's peak allocation) is that case's alone.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from ..models.cpu_products import cpu_features, cpu_name
from ..models.loading import DTYPES
from ..models.prompts import Prompts
from ..models.registry import build_region_model
from ..options import AnythingOptions, GenerationOptions
from ..tables import markdown_table
from .roofline import PRODUCT_SIDE, roofline, roofline_rows, synchronize

SAM_SIZES = {
    # hidden, layers, heads, global attention layers (SAM's ViT-B/L/H)
    "vit-b": (768, 12, 12, [2, 5, 8, 11]),
    "vit-l": (1024, 24, 16, [5, 11, 17, 23]),
    "vit-h": (1280, 32, 16, [7, 15, 23, 31]),
    "tiny": (64, 2, 2, [1]),  # for checking the benchmark itself
}


LM_SIZES = {
    # GPT-2's sizes: hidden, layers, heads
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
SCOPES = {"api": "full API: masks at image size + RLE", "model": "model step: bare generate"}


@dataclass
class Case:
    """One row of the table.

    model: a model kind (`sca`, `sam-captioner`, or any registered kind); `KIND-anything` segments and captions
        everything (a points_per_side² grid), with `forced_masks` survivors when > 0 (random weights pass none of
        SAM's filters: the filters are opened and the best `forced_masks` candidates kept).
    lm: SCA's LM: a GPT-2 size (`gpt2`, `gpt2-large`, ...) or any causal LM's config (a folder or hub id);
        SAM-Captioner's captioner family (`blip`, `git`).
    scope: `api` (RegionCaptioner: masks at image size and RLE, as users see it) or `model` (a bare
        `ScaModel.generate`, the original's scope).
    quantize: `int8` runs the LM's and the encoder's linear layers in int8 (dynamic quantization).
    static_cache: decode with a static KV cache (transformers compiles the decoding step on a GPU).
    photo_size: the side of the square picture given to the API, in pixels (None: the model's input size); a larger
        one is resized down to the model's input and its masks come back at its own size (memory of large photos).
    roofline: also each stage's operations, seconds and share of this machine's product rate (`bench.roofline`).
    """

    model: str = "sca"
    sam: str = "vit-b"
    lm: str = "gpt2"
    mixer_layers: int | None = None  # None: the configuration's (the paper's)
    dtype: str = "float32"
    chunk_size: int = 16
    regions: int = 64
    image_size: int = 1024
    new_tokens: int = 20
    device: str = "cpu"
    points_per_side: int = 32
    forced_masks: int = 0
    runs: int = 3
    scope: str = "api"
    quantize: str | None = None
    static_cache: bool = False
    candidates: str = "all"
    photo_size: int | None = None
    roofline: bool = False

    @property
    def photo_side(self) -> int:
        return self.photo_size or self.image_size


@dataclass
class Result:
    case: Case
    seconds_per_image: float
    regions_per_second: float
    peak_memory_gb: float
    parts: dict = field(default_factory=dict)
    weights: str = "random (real-size config)"


def sam_vision_config(size: str, image_size: int) -> dict:
    hidden, layers, heads, global_layers = SAM_SIZES[size]
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                global_attn_indexes=global_layers, image_size=image_size, mlp_dim=4 * hidden)


def lm_config(name: str):
    """A GPT-2 size by name, or any causal LM's config from a folder or hub id (random weights either way)."""
    from transformers import AutoConfig, GPT2Config

    if name in LM_SIZES:
        hidden, layers, heads = LM_SIZES[name]
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads)
    from ..models.hub import ModelSource

    source = ModelSource.parse(name)
    return AutoConfig.from_pretrained(source.location, **source.pretrained_kwargs)


def build_sca(case: Case):
    """SCA at real size with random weights; captions are decoded as ids (there is no tokenizer to speak of)."""
    from ..models import ScaConfig, ScaModel
    from ..models.sca_region import ScaRegionModel

    config = ScaConfig(
        vision_config=sam_vision_config(case.sam, case.image_size),
        prompt_encoder_config=dict(image_size=case.image_size),
        mask_caption_decoder_config={} if case.mixer_layers is None else {"additional_num_hidden_layers": case.mixer_layers},
        text_config=lm_config(case.lm).to_dict(),
    )
    model = ScaModel(config).to(case.device, DTYPES[case.dtype]).eval()
    if case.quantize == "int8":
        from ..models.quantize import quantize_int8

        quantize_int8(model)
    return ScaRegionModel(model, _IdsTokenizer(model.config.text_config), _forced_length(case))


def _forced_length(case: Case) -> GenerationOptions:
    """Every caption decoded to its full length, so that the time does not depend on random weights' EOS."""
    extra = {"min_new_tokens": case.new_tokens}
    if case.static_cache:
        extra["cache_implementation"] = "static"
    return GenerationOptions(max_new_tokens=case.new_tokens, chunk_size=case.chunk_size, extra=extra)


SAM2_SIZES = {
    # Hiera: embedding width, blocks per stage, heads per stage, global attention blocks (SAM 2.1's tiny and base+)
    "sam2-hiera-t": (96, [1, 2, 7, 2], [1, 2, 4, 8], [5, 7, 9]),
    "sam2-hiera-b+": (112, [2, 3, 16, 3], [2, 4, 8, 16], [12, 16, 20]),
    "sam2-tiny": (16, [1, 1, 2, 1], [1, 1, 1, 1], [3]),  # for checking the benchmark itself (224² and up)
}


def sam2_config(size: str, image_size: int):
    """SAM 2's configuration with a Hiera of this size (`SAM2_SIZES`)."""
    from transformers import Sam2Config

    width, blocks, heads, global_blocks = SAM2_SIZES[size]
    widths = [width * 2**i for i in range(4)]
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=width, num_attention_heads=heads[0],
                    image_size=[image_size] * 2, blocks_per_stage=blocks, embed_dim_per_stage=widths,
                    num_attention_heads_per_stage=heads, global_attention_blocks=global_blocks)
    side = image_size // 4
    vision = dict(backbone_config=backbone, backbone_channel_list=widths[::-1],
                  backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]])
    return Sam2Config(vision_config=vision, prompt_encoder_config=dict(image_size=image_size))


def build_segmenter(case: Case):
    """SAM (ViT-B/L/H) or SAM 2 (Hiera) at real size with random weights."""
    from transformers import Sam2Model, SamConfig, SamModel

    if case.sam in SAM2_SIZES:
        return Sam2Model(sam2_config(case.sam, case.image_size))
    return SamModel(SamConfig(vision_config=sam_vision_config(case.sam, case.image_size),
                              prompt_encoder_config=dict(image_size=case.image_size)))


def build_sca_sam2(case: Case):
    """SCA on SAM 2 at real size with random weights (a Hiera of `case.sam`, SCA's mixer, the LM)."""
    from ..models.sca_region import ScaRegionModel
    from ..models.sca_sam2 import ScaSam2Config, ScaSam2Model

    config = ScaSam2Config(sam2_config=sam2_config(case.sam, case.image_size).to_dict(),
                           text_config=lm_config(case.lm).to_dict(),
                           **({} if case.mixer_layers is None else {"mixer_layers": case.mixer_layers}))
    model = ScaSam2Model(config).to(case.device, DTYPES[case.dtype]).eval()
    if case.quantize == "int8":
        from ..models.quantize import quantize_int8

        quantize_int8(model)
    return ScaRegionModel(model, _IdsTokenizer(model.config.text_config), _forced_length(case))


def takes(model: str, sam: str) -> bool:
    """Whether a row of this kind runs on this segmenter size: SCA on SAM's ViTs, SCA on SAM 2 on its Hieras."""
    kind = model.removesuffix("-anything")
    return (sam in SAM2_SIZES) == (kind == "sca-sam2") or kind not in ("sca", "sca-sam2")


def build_sam_captioner(case: Case):
    """A segmenter and a captioner at real size with random weights: BLIP base or GIT base on crops, or LLaVA-1.5
    (CLIP ViT-L/14 at 336 px and a 7B LLaMA's shape cut to 0.5B: 24 layers of width 1024) on focal prompts."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        CLIPImageProcessorPil,
        GitConfig,
        GitForCausalLM,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from ..models.captioners import ChatCaptioner, CropCaptioner
    from ..models.sam_captioner import SamCaptioner

    dtype = DTYPES[case.dtype]
    options = dict(max_new_tokens=case.new_tokens, batch_size=case.chunk_size,
                   generate_options={"min_new_tokens": case.new_tokens})
    if case.lm in ("blip", "git"):
        if case.lm == "blip":
            captioner, size = BlipForConditionalGeneration(BlipConfig()), 384  # ViT-B/16 at 384, BERT-base decoder
        else:
            captioner, size = GitForCausalLM(GitConfig()), 224  # CLIP ViT-B/16 at 224
        processor = _RandomWeightsProcessor(BlipImageProcessorPil(size={"height": size, "width": size}))
        describer = CropCaptioner(captioner.to(case.device, dtype).eval(), processor, **options)
    elif case.lm == "llava":
        from ..models.tiny import build_bpe_tokenizer

        tokenizer = build_bpe_tokenizer(["USER ASSISTANT describe the outlined region"], vocab_size=300)
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        tokenizer.image_token, tokenizer.image_token_id = "<image>", tokenizer.convert_tokens_to_ids("<image>")
        template = ("USER: {% for part in messages[0]['content'] %}{% if part['type'] == 'image' %}<image>\n"
                    "{% else %}{{ part['text'] }}{% endif %}{% endfor %} ASSISTANT:")
        from transformers import LlavaProcessor

        images = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=template, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
        processor.batch_decode = lambda ids, skip_special_tokens=True: _ids_as_text(ids)
        config = LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                               num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14),
            text_config=dict(model_type="llama", hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                             num_attention_heads=16, vocab_size=32064),
            image_token_id=tokenizer.image_token_id)
        describer = ChatCaptioner(LlavaForConditionalGeneration(config).to(case.device, dtype).eval(), processor,
                                  **options)
    else:
        raise ValueError(f"unknown captioner {case.lm!r} for the benchmark: use blip, git or llava")
    return SamCaptioner(build_segmenter(case).to(case.device, dtype), describer, chunk_size=case.chunk_size,
                        candidates=case.candidates)


RANDOM_WEIGHTS = {"sca": build_sca, "sca-sam2": build_sca_sam2, "sam-captioner": build_sam_captioner}
"""Kinds the benchmark builds at real size with random weights (no checkpoint needed); others use their defaults."""


class _RandomWeightsProcessor:
    """Image preprocessing of a captioner whose tokenizer is not at hand: captions are ids, decoded as such."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, images, text=None, return_tensors="pt", **_):
        return self.image_processor(images, return_tensors=return_tensors)

    def batch_decode(self, ids, skip_special_tokens=True):
        return _ids_as_text(ids)


def benchmark_image(image_size: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))


def benchmark_boxes(count: int, image_size: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    x1, y1 = rng.uniform(0, 0.7 * image_size, (2, count))
    w, h = rng.uniform(0.05 * image_size, 0.3 * image_size, (2, count))
    return [[float(a), float(b), float(a + c), float(b + d)] for a, b, c, d in zip(x1, y1, w, h)]


def run_case(case: Case) -> Result:
    """Time one image: a warm-up on the very call that is timed, then `case.runs` timed runs (median reported)."""
    from ..api import RegionCaptioner

    torch.manual_seed(0)
    kind = case.model.removesuffix("-anything")
    if kind in RANDOM_WEIGHTS:
        with torch.device(case.device):  # random initialisation on the device itself: seconds, not minutes, at ViT-H
            model = RANDOM_WEIGHTS[kind](case)
    else:  # any other registered kind, with its defaults
        model = build_region_model(kind, {}, dtype=DTYPES[case.dtype], device=torch.device(case.device),
                                   generation=_forced_length(case))
    captioner = RegionCaptioner(model, chunk_size=case.chunk_size)
    image = benchmark_image(case.photo_side)
    boxes = benchmark_boxes(case.regions, case.photo_side)
    anything = AnythingOptions(points_per_side=case.points_per_side, points_per_batch=max(case.chunk_size, 64))
    if case.forced_masks:
        anything = AnythingOptions(points_per_side=case.points_per_side, points_per_batch=max(case.chunk_size, 64),
                                   pred_iou_thresh=-1e9, stability_score_thresh=0.0, box_nms_thresh=1.0,
                                   max_candidates=3 * case.forced_masks, max_masks=case.forced_masks)

    def once() -> tuple[float, float, int]:
        start = time.perf_counter()
        if case.scope == "model":
            encoded = model.encode([image])
            synchronize(case.device)
            middle = time.perf_counter()
            prompts, _ = Prompts.from_pixels(encoded.framed[0], model.frame, boxes=boxes)
            count = len(captioner.engine.predict(encoded, prompts)[0])  # captions and IoU, no masks at image size
        else:
            captioner.set_image(image)
            synchronize(case.device)
            middle = time.perf_counter()
            regions = captioner.anything(anything) if case.model.endswith("-anything") else captioner.caption(boxes=boxes)
            count = len(regions)
        synchronize(case.device)
        return time.perf_counter() - start, middle - start, count

    with torch.inference_mode():
        once()  # warm-up on the same shapes: one-time allocations and kernel selection
        if case.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        timings = [once() for _ in range(case.runs)]
    totals = sorted(t[0] for t in timings)
    median = statistics.median(totals)
    parts = {"encoder_s": statistics.median(t[1] for t in timings), "min_s": totals[0], "max_s": totals[-1],
             "regions": timings[0][2]}
    peak = _peak_memory_gb(case.device)
    if not case.model.endswith("-anything"):
        # Chunked, batched decoding must give the captions of one region at a time (checked on a few).
        with torch.inference_mode():
            captioner.set_image(image)
            together = [r.caption for r in captioner.caption(boxes=boxes[:4])]
            alone = [captioner.caption(boxes=[box])[0].caption for box in boxes[:4]]
        parts["same_as_one_at_a_time"] = alone == together
    module = getattr(model, "model", None)
    if case.roofline and isinstance(module, torch.nn.Module):
        with torch.inference_mode():
            parts["roofline"] = roofline(module, once, DTYPES[case.dtype], case.device)
    return Result(case, median, timings[0][2] / median, peak, parts)


def machine() -> str:
    """What the figures were measured on: processor, cores, accelerator, torch and transformers."""
    import platform

    import transformers

    cpu = cpu_name() or platform.processor() or "?"
    features = cpu_features()
    if features:
        cpu += f" ({', '.join(features)})"
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


class _IdsTokenizer:
    """Generation needs only the special ids; captions of random weights are shown as ids."""

    def __init__(self, text_config):
        self.pad_token_id = text_config.pad_token_id if text_config.pad_token_id is not None else text_config.eos_token_id
        self.eos_token_id = text_config.eos_token_id

    def batch_decode(self, ids, skip_special_tokens=True):
        return _ids_as_text(ids)


def _ids_as_text(ids: torch.Tensor) -> list[str]:
    """Generated ids shown as themselves: a random-weights model has no tokenizer worth decoding with."""
    return [" ".join(map(str, row.tolist())) for row in ids]


def _peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB


def run_in_subprocess(case: Case, timeout: float | None = None) -> Result:
    """`run_case` in a fresh process: its peak memory is this case's alone."""
    command = [sys.executable, "-m", "sca.bench.speed", json.dumps(asdict(case))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed: {done.stderr.strip().splitlines()[-1:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Result(Case(**data.pop("case")), **data)


def markdown(results: list[Result], where: str | None = None) -> str:
    header = ["model", "SAM", "LM / captioner", "precision", "chunk", "regions", "scope", "s / image (min–max)",
              "regions / s", "peak memory (GB)", "encoder s", "= one at a time"]
    rows = []
    for r in results:
        regions = r.parts.get("regions", r.case.regions)
        if r.case.model.endswith("-anything"):
            regions = f"{r.case.points_per_side}² grid → {regions}"
        same = {True: "yes", False: "no"}.get(r.parts.get("same_as_one_at_a_time"), "")
        precision = r.case.dtype + (f" + {r.case.quantize}" if r.case.quantize else "")
        spread = f"{r.seconds_per_image:.2f} ({r.parts.get('min_s', r.seconds_per_image):.2f}–" \
                 f"{r.parts.get('max_s', r.seconds_per_image):.2f})"
        rows.append([r.case.model, r.case.sam, r.case.lm, precision, r.case.chunk_size, regions, r.case.scope, spread,
                     f"{r.regions_per_second:.1f}", f"{r.peak_memory_gb:.2f}", f"{r.parts.get('encoder_s', 0):.2f}",
                     same])
    devices = sorted({r.case.device for r in results})
    first = results[0].case
    note = (f"One {first.photo_side}² image, {first.new_tokens} new tokens per caption, box prompts; median of "
            f"{first.runs} runs after a warm-up on the same shapes; device {', '.join(devices)}; weights: "
            f"{results[0].weights}. Measured on {where or machine()}.")
    return markdown_table(header, rows, note=note)


def roofline_markdown(results: list[Result], where: str | None = None) -> str:
    """Per row measured with `roofline`, per stage: operations, seconds, rate and its share of this machine's."""
    rows = []
    rates = []
    for r in results:
        figures = r.parts.get("roofline")
        if figures:
            precision = r.case.dtype + (f" + {r.case.quantize}" if r.case.quantize else "")
            rows += roofline_rows([r.case.model, r.case.sam, r.case.lm, precision], figures)
            rates.append(f"{precision}: {figures['product_flops'] / 1e9:.0f} GFLOP/s")
    if not rows:
        return ""
    note = (f"Operations: matrix products, convolutions and attention (torch's FlopCounterMode); a stage's rate is "
            f"its operations over its seconds (one run), its share is of this machine's matrix-product rate measured "
            f"on the spot ({'; '.join(dict.fromkeys(rates))}; a {PRODUCT_SIDE}² product); `other` is what runs outside the "
            f"stages (prompts, masks at the image's size, RLE). Measured on {where or machine()}.")
    return markdown_table(["model", "SAM", "LM / captioner", "precision", "stage", "GFLOP", "s", "GFLOP/s",
                           "share of product rate"], rows, title="Roofline: where the time goes", note=note)


if __name__ == "__main__":
    result = run_case(Case(**json.loads(sys.argv[1])))
    print(json.dumps(asdict(result)))
