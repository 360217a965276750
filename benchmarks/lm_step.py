"""Where the LM's time goes when it decodes a chunk of captions: the prefill and each decoding step, against the
machine's compute and memory.

    python benchmarks/lm_step.py                                  # GPT-2 124M, 64 rows, fp32, oneDNN and not
    python benchmarks/lm_step.py --lm gpt2-large --rows 16,64 --dtype bfloat16

SCA's LM decodes a chunk's regions as one batch with a KV cache: each step multiplies every row by all the LM's
weights (its word matrix included, as the head), so a step does 2 x parameters x rows FLOPs and reads the weights
once. The table gives both rates per step: whichever is near the machine's limit is what bounds decoding.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from sca.bench.speed import lm_config, machine
from sca.models.cpu_products import onednn_linear_layers
from sca.models.loading import DTYPES
from sca.tables import markdown_table


def time_generation(lm, rows: int, prefix: int, new_tokens: int, onednn: bool) -> tuple[float, list[float]]:
    """Seconds of the prefill and of each decoding step (forward passes timed by hooks)."""
    starts, seconds = [], []
    handles = [lm.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())),
               lm.register_forward_hook(lambda *_: seconds.append(time.perf_counter() - starts[-1]))]
    embeds = torch.randn(rows, prefix, lm.config.hidden_size, dtype=lm.dtype) * 0.02
    try:
        with torch.inference_mode(), (onednn_linear_layers(torch.device("cpu")) if onednn else contextlib.nullcontext()):
            lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(rows, prefix, dtype=torch.long),
                        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    finally:
        for handle in handles:
            handle.remove()
    return seconds[0], seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default="gpt2", help="a GPT-2 size or any causal LM's config (random weights)")
    parser.add_argument("--rows", default="64", help="comma-separated batch sizes (regions decoded together)")
    parser.add_argument("--prefix", type=int, default=14, help="prefix length (SCA: task tokens + caption queries)")
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--runs", type=int, default=2, help="generations per row (the median step of all is shown)")
    args = parser.parse_args()
    try:
        batch_sizes = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows takes whole numbers, got {args.rows!r}")
    if min(batch_sizes + [args.prefix, args.new_tokens - 1, args.runs]) < 1:
        parser.error("--rows, --prefix and --runs must be at least 1, --new-tokens at least 2")

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(lm_config(args.lm)).to(DTYPES[args.dtype]).eval()
    parameters = sum(p.numel() for p in lm.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    choices = [False, True] if args.dtype == "float32" else [False]  # oneDNN's mode changes float32 products only
    table = []
    for rows in batch_sizes:
        for onednn in choices:
            prefills, steps = [], []
            for _ in range(args.runs + 1):  # the first is a warm-up
                prefill, decoding = time_generation(lm, rows, args.prefix, args.new_tokens, onednn)
                prefills.append(prefill)
                steps.append(decoding)
            prefill = statistics.median(prefills[1:])
            step = statistics.median(s for run in steps[1:] for s in run)
            flops = 2 * parameters * rows
            table.append([rows, "oneDNN" if onednn else "default", f"{prefill * 1e3:.0f}", f"{step * 1e3:.1f}",
                          f"{flops / step / 1e9:.0f}", f"{weight_bytes / step / 1e9:.1f}",
                          f"{prefill + step * (args.new_tokens - 1):.2f}"])
    print(markdown_table(
        ["rows", "products", "prefill ms", "step ms (median)", "step GFLOP/s", "step GB/s of weights", "total s"],
        table,
        title=f"{args.lm} ({parameters / 1e6:.0f}M parameters, {weight_bytes / 1e9:.2f} GB in {args.dtype}), prefix "
              f"{args.prefix}, {args.new_tokens} tokens",
        note=f"A step does 2 x parameters x rows FLOPs and reads the weights once. Measured on {machine()}."))


if __name__ == "__main__":
    main()
