"""Where the time goes, against what this machine can do: per stage of a model (image encoder, SAM's decoder, the
mixer, the LM), the matrix-product operations it does, the seconds it takes, and the rate it reaches as a share of
this machine's own matrix-product rate in that precision, measured on the spot (`product_rate`).

Operations are counted by torch's `FlopCounterMode` (matrix products, convolutions, attention: what the rate is
measured on; element-wise work costs time but no operations here, so a stage dominated by it shows a low share).
Stages are a module's method found by its path in the model (`STAGES`: SCA calls its mask decoder's `segment` and
`mix`, not its `forward`); a stage nested in another is subtracted from it, and what runs outside every stage
(prompt encoding, masks at the image's size, RLE, Python) is `other`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..models import cpu_products

STAGES = {
    # stage -> where it may run: "module path" (its forward) or "module path:method" (":method": the model's own),
    # under a region model's `model`; the first found is used
    "image encoder": (":get_image_embeddings", "vision_encoder", "sam.vision_encoder"),
    "SAM decoder": ("mask_decoder:segment", "sam.mask_decoder"),
    "mixer": ("mask_decoder:mix", "mixer"),
    "LM": ("language_model",),
}
PRODUCT_SIDE = 2048
"""The side of the square products the machine's rate is measured on (at most: see `PRODUCT_SECONDS`)."""
PRODUCT_SECONDS = 0.5
"""A measured product takes about this long at most: a precision the CPU has no units for runs at ~1% of its rate
(bf16 on an AVX2 CPU: ~1 GFLOP/s), where a product of `PRODUCT_SIDE` takes ~20 s; a smaller one says as much."""
PROBE_SIDE = 256
"""The side of the first product, whose time picks the side of those measured."""


def _linear_flop(input_shape, weight_shape, *_, out_shape=None, **__) -> int:
    """oneDNN's linear (`models.cpu_products`, the models' float32 products on a CPU): `(..., K)` by `(N, K)`."""
    rows = 1
    for side in input_shape[:-1]:
        rows *= side
    return 2 * rows * input_shape[-1] * weight_shape[0]


def _cpu_attention_flop(query_shape, key_shape, value_shape, *_, out_shape=None, **__) -> int:
    """SDPA's CPU kernel (SAM's first decoder layer over a shared image side): both products of the attention."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flop_formulas() -> dict:
    """Formulas for the ops torch's counter does not know that the models run."""
    formulas = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flop}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        formulas[torch.ops.mkldnn._linear_pointwise] = _linear_flop
    return formulas


def product_rate(dtype: torch.dtype, device: str = "cpu", side: int = PRODUCT_SIDE, repeats: int = 5) -> float:
    """This machine's matrix-product rate in `dtype`, in FLOP/s: the best of `repeats` square products of `side`
    (smaller where one would take over `PRODUCT_SECONDS`, as a first product of `PROBE_SIDE` tells) after a warm-up,
    through torch's product and through the linear layers' own path (`models.cpu_products`' oneDNN products where
    they apply)."""
    probe = _best_rate(dtype, device, min(side, PROBE_SIDE), repeats=1)
    side = min(side, max(PROBE_SIDE, int((PRODUCT_SECONDS * probe / 2) ** (1 / 3))))
    return _best_rate(dtype, device, side, repeats)


def _best_rate(dtype: torch.dtype, device: str, side: int, repeats: int) -> float:
    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    products = [torch.mm]
    if cpu_products.available() and cpu_products.applies(a, b):
        products.append(cpu_products.linear)
    best = float("inf")
    for product in products:
        for i in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            product(a, b)
            synchronize(device)
            if i:  # the first is the warm-up
                best = min(best, time.perf_counter() - start)
    return 2 * side**3 / best


def find_stages(model: torch.nn.Module) -> dict[str, tuple[str, str]]:
    """`{stage: (module path, method)}` for the stages of `STAGES` the model has."""
    modules = dict(model.named_modules())
    found = {}
    for stage, places in STAGES.items():
        for place in places:
            path, _, method = place.partition(":")
            if path in modules and callable(getattr(modules[path], method or "forward", None)):
                found[stage] = (path, method or "forward")
                break
    return found


class StageMeter:
    """Seconds and operations per stage while it is attached (`measure`), by wrapping the stages' methods for the
    while; each stage's figures exclude the stages nested in it."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        self.model = model
        self.device = device
        self.stages = find_stages(model)
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)
        self.total_flop = 0

    @contextmanager
    def measure(self, count_flops: bool = False):
        """Within: each stage's inclusive seconds (or, with `count_flops`, operations: counting slows the run, so
        seconds and operations come from two runs)."""
        counter = FlopCounterMode(display=False, custom_mapping=_flop_formulas()) if count_flops else None
        modules = dict(self.model.named_modules())
        saved = []

        def now() -> float:
            if counter is not None:
                return float(counter.get_total_flops())
            synchronize(self.device)
            return time.perf_counter()

        def metered(stage: str, method: Callable) -> Callable:
            def run(*args, **kwargs):
                started = now()
                try:
                    return method(*args, **kwargs)
                finally:
                    spent = now() - started
                    if counter is not None:
                        self.flops[stage] += int(spent)
                    else:
                        self.seconds[stage] += spent

            return run

        for stage, (path, name) in self.stages.items():
            module = modules[path]
            saved.append((module, name, vars(module).get(name)))
            setattr(module, name, metered(stage, getattr(module, name)))  # the instance's, over its class's
        try:
            with counter if counter is not None else nullcontext():
                yield
        finally:
            for module, name, own in saved:
                if own is None:
                    delattr(module, name)
                else:
                    setattr(module, name, own)
            if counter is not None:
                self.total_flop = counter.get_total_flops()

    def exclusive(self, figures: dict[str, float]) -> dict[str, float]:
        """Inclusive figures less those of the stages nested in each."""
        result = dict(figures)
        for stage, (path, _) in self.stages.items():
            for inner, (inner_path, _) in self.stages.items():
                if inner != stage and inner_path.startswith(path + "."):
                    result[stage] = result.get(stage, 0) - figures.get(inner, 0)
        return result


def roofline(model: torch.nn.Module, run: Callable[[], object], dtype: torch.dtype, device: str = "cpu") -> dict:
    """Run `run()` twice (timed, then counted) with the stages of `model` metered: `{"product_flops": rate,
    "stages": {stage: {"flop", "seconds"}}, "total_seconds", "total_flop"}` ("other": what runs outside every
    stage)."""
    meter = StageMeter(model, device)
    synchronize(device)
    start = time.perf_counter()
    with meter.measure():
        run()
    synchronize(device)
    total_seconds = time.perf_counter() - start
    with meter.measure(count_flops=True):
        run()
    total_flop = meter.total_flop
    seconds, flops = meter.exclusive(meter.seconds), meter.exclusive(meter.flops)
    stages = {stage: {"flop": int(flops.get(stage, 0)), "seconds": seconds.get(stage, 0.0)} for stage in meter.stages}
    stages["other"] = {"flop": int(total_flop - sum(s["flop"] for s in stages.values())),
                       "seconds": max(0.0, total_seconds - sum(s["seconds"] for s in stages.values()))}
    return {"product_flops": product_rate(dtype, device), "stages": stages, "total_seconds": total_seconds,
            "total_flop": int(total_flop)}


def roofline_rows(label: list, figures: dict) -> list[list]:
    """Table rows for one measured case: per stage, GFLOP, seconds, GFLOP/s and its share of the product rate."""
    rate = figures["product_flops"]
    rows = []
    entries = [*figures["stages"].items(), ("total", {"flop": figures["total_flop"],
                                                      "seconds": figures["total_seconds"]})]
    for stage, entry in entries:
        achieved = entry["flop"] / entry["seconds"] if entry["seconds"] > 0 else 0.0
        share = f"{100 * achieved / rate:.0f}%" if entry["flop"] else "–"
        rows.append([*label, stage, f"{entry['flop'] / 1e9:.1f}", f"{entry['seconds']:.2f}", f"{achieved / 1e9:.0f}",
                     share])
    return rows


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a GPU's), so that a clock reads the work done."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
