"""Where one image's time goes on a GPU: the paper's configuration (SAM ViT-H + mixer + GPT-2 large) by part,
and the LM's decoding with the dynamic and the static (compiled) KV cache.

    python benchmarks/gpu_profile.py --dtype float16 --regions 47

Parts are timed with the device synchronised around each, median of --runs after a warm-up; the profiler's
kernel count per decoding step says whether decoding is bound by launches or by the GPU's work.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sca.bench.speed import Case, benchmark_boxes, benchmark_image, build_sca
from sca.masks import encode_rles
from sca.models.prompts import Prompts


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(step, runs: int) -> float:
    step()
    synchronize()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="vit-h")
    parser.add_argument("--lm", default="gpt2-large")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--regions", type=int, default=47)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mixer-layers", type=int, help="default: the paper's (ScaConfig's)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    case = Case(sam=args.sam, lm=args.lm, dtype=args.dtype, chunk_size=args.regions, regions=args.regions,
                new_tokens=args.new_tokens, device=args.device, mixer_layers=args.mixer_layers)
    with torch.device(args.device):
        region_model = build_sca(case)
    sca, image = region_model.model, benchmark_image(case.image_size)
    boxes = benchmark_boxes(case.regions, case.image_size)
    with torch.inference_mode():
        encoded = region_model.encode([image])
        prompts, _ = Prompts.from_pixels(encoded.framed[0], region_model.frame, boxes=boxes)
        prompts = prompts.to(region_model.device, region_model.dtype)
        embeddings = encoded.embeddings
        tasks = sca.task_type_ids(None, 1)
        parts = {"preprocess + encoder": timed(lambda: region_model.encode([image]), args.runs)}
        parts["SAM decoder + mixer + prefix"] = timed(
            lambda: sca.caption_prefix(sca.segment(embeddings, prompts), tasks), args.runs)
        segmentation = sca.segment(embeddings, prompts)
        prefix = sca.caption_prefix(segmentation, tasks)[1].flatten(0, 1)
        options = dict(inputs_embeds=prefix, attention_mask=prefix.new_ones(prefix.shape[:2], dtype=torch.long),
                       max_new_tokens=case.new_tokens, min_new_tokens=case.new_tokens, do_sample=False,
                       pad_token_id=0, eos_token_id=0)
        lm = sca.language_model
        parts[f"LM, {prefix.shape[0]} captions, dynamic cache"] = timed(lambda: lm.generate(**options), args.runs)
        start = time.perf_counter()
        lm.generate(**options, cache_implementation="static")
        synchronize()
        parts["LM static cache: first call (compiles)"] = time.perf_counter() - start
        parts["LM, static cache"] = timed(lambda: lm.generate(**options, cache_implementation="static"), args.runs)
        fewer = {**options, "inputs_embeds": prefix[: len(prefix) // 2],
                 "attention_mask": options["attention_mask"][: len(prefix) // 2]}
        start = time.perf_counter()
        lm.generate(**fewer, cache_implementation="static")
        synchronize()
        parts[f"LM static cache: first call at {len(prefix) // 2} captions"] = time.perf_counter() - start
        low_res = segmentation.pred_masks[0]
        framed = encoded.framed[0]

        def rles(logits: torch.Tensor, on_host: bool) -> list[list[dict]]:
            """Each region's masks at the image's size and their RLE, written where they are or by pycocotools."""
            full_size = (region_model.frame.masks_to_original(m[None], framed)[0] for m in logits)
            return [encode_rles(masks.cpu() if on_host else masks) for masks in full_size]

        smooth = torch.full_like(low_res, -1.0)
        smooth[..., 64:192, 32:160] = 1.0
        parts["masks at image size + RLE (runs and strings on the device)"] = timed(lambda: rles(low_res, False),
                                                                                    args.runs)
        parts["masks at image size + RLE (pycocotools on the host)"] = timed(lambda: rles(low_res, True), args.runs)
        parts["masks at image size + RLE, one rectangle each (device / host)"] = (
            timed(lambda: rles(smooth, False), args.runs), timed(lambda: rles(smooth, True), args.runs))
        print("device RLEs equal to pycocotools':", rles(low_res, False) == rles(low_res, True))
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities[torch.cuda.is_available():]) as profile:
            lm.generate(**options)
            synchronize()
        kernels = sum(event.count for event in profile.key_averages() if event.device_type.name == "CUDA")
    print(f"{args.sam} + {args.lm}, {args.dtype}, {args.regions} regions, {case.new_tokens} tokens, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, torch {torch.__version__}")
    for name, seconds in parts.items():
        shown = " / ".join(f"{value * 1000:.1f} ms" for value in (seconds if isinstance(seconds, tuple) else (seconds,)))
        print(f"| {name} | {shown} |")
    print(f"| GPU kernels per decoding step (dynamic cache) | {kernels / case.new_tokens:.0f} |")
    print(profile.key_averages().table(sort_by="self_device_time_total", row_limit=12))


if __name__ == "__main__":
    main()
