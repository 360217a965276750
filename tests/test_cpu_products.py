"""Float32 products through oneDNN on a CPU compute what PyTorch's own products compute, and only where meant."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from sca.models import cpu_products

pytestmark = pytest.mark.skipif(not cpu_products.available(), reason="this PyTorch build has no oneDNN")


def _spy(monkeypatch) -> list:
    calls, linear = [], cpu_products.linear
    monkeypatch.setattr(cpu_products, "linear", lambda *args: calls.append(args[0].shape) or linear(*args))
    return calls


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), depth=st.integers(1, 40), width=st.integers(1, 40), leading=st.integers(0, 2),
       weight_layout=st.sampled_from(["contiguous", "transposed", "strided"]), with_bias=st.booleans(),
       strided_inputs=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_matches_torch(rows, depth, width, leading, weight_layout, with_bias, strided_inputs, seed):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(*[2] * leading, rows, depth + 3 * strided_inputs, generator=generator)[..., :depth]
    weight = {
        "contiguous": lambda: torch.randn(width, depth, generator=generator),
        "transposed": lambda: torch.randn(depth, width, generator=generator).t(),  # GPT-2's Conv1D weight, read as (N, K)
        "strided": lambda: torch.randn(width, 3 * depth, generator=generator)[:, ::3],  # a view oneDNN cannot read
    }[weight_layout]()
    bias = torch.randn(width, generator=generator) if with_bias else None
    got = cpu_products.linear(inputs, weight, bias)
    assert got.shape == (*inputs.shape[:-1], width)
    torch.testing.assert_close(got, F.linear(inputs, weight, bias), atol=1e-5, rtol=1e-5)


def test_the_mode_routes_float32_linear_layers_at_inference(monkeypatch):
    calls = _spy(monkeypatch)
    linear, conv1d = torch.nn.Linear(12, 5), Conv1D(7, 12)
    torch.nn.init.normal_(conv1d.bias)
    inputs = torch.randn(2, 3, 12)
    with torch.no_grad():
        want = (linear(inputs), conv1d(inputs), torch.addmm(torch.randn(3, 4), torch.randn(3, 2), torch.randn(2, 4)))
        with cpu_products.onednn_linear_layers(torch.device("cpu")):
            got_linear, got_conv1d = linear(inputs), conv1d(inputs)
            assert len(calls) == 2
            matrix_bias = torch.randn(3, 4)  # a residual added by addmm is not a linear layer's bias: left alone
            torch.addmm(matrix_bias, torch.randn(3, 2), torch.randn(2, 4))
            linear.to(torch.bfloat16)(inputs.bfloat16())  # bf16 products already run on oneDNN
            F.linear(torch.randn(12), linear.weight.float())  # a vector input stays with PyTorch
            F.linear(inputs, linear.weight[0].float())  # and so does a vector weight
            assert len(calls) == 2
    torch.testing.assert_close(got_linear, want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_conv1d, want[1], atol=1e-5, rtol=1e-5)


def test_training_and_other_devices_keep_pytorchs_products(monkeypatch):
    calls = _spy(monkeypatch)
    linear = torch.nn.Linear(6, 4)
    with cpu_products.onednn_linear_layers(torch.device("cpu")):  # gradients on: nothing changes
        linear(torch.randn(3, 6)).sum().backward()
    assert linear.weight.grad is not None and not calls
    with torch.no_grad():
        assert not isinstance(cpu_products.onednn_linear_layers(torch.device("meta")), cpu_products.OneDnnLinearLayers)
        assert isinstance(cpu_products.onednn_linear_layers(torch.device("cpu")), cpu_products.OneDnnLinearLayers)


@pytest.mark.parametrize("shapes", [
    ((2, 3, 5, 8), (2, 3, 8, 6)),  # one matrix per region
    ((2, 15, 8), (2, 8, 6)),  # the regions' rows against a shared image side
    ((2, 3, 5, 8), (2, 1, 8, 6)),  # broadcast
    ((4, 8), (8, 6)),
])
def test_region_matmul_matches_matmul(shapes):
    generator = torch.Generator().manual_seed(3)
    left, right = (torch.randn(*shape, generator=generator) for shape in shapes)
    with torch.no_grad():
        got = cpu_products.region_matmul(left, right)
        torch.testing.assert_close(got, left @ right, atol=1e-5, rtol=1e-5)
        # a transposed right side (the image's positions as columns), as the two-way attention passes it
        right_t = torch.randn(*shapes[1][:-2], shapes[1][-1], shapes[1][-2], generator=generator).transpose(-1, -2)
        torch.testing.assert_close(cpu_products.region_matmul(left, right_t), left @ right_t, atol=1e-5, rtol=1e-5)
        for a, b in ((left.bfloat16(), right.bfloat16()), (left[..., :0, :], right)):  # bf16, no rows: PyTorch's
            assert torch.equal(cpu_products.region_matmul(a, b), a @ b)


def test_sca_decodes_the_same_captions_with_and_without_onednn(tiny_model, monkeypatch):
    size = tiny_model.config.vision_config.image_size
    pixel_values = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(8))
    boxes = torch.tensor([[[0.0, 0.0, size / 2, size / 2], [size / 4, size / 8, size, size]]] * 2)
    calls = _spy(monkeypatch)
    fast = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes, max_new_tokens=6)
    assert calls  # the encoder's, the decoder's and the LM's linear layers went through oneDNN
    monkeypatch.setattr(cpu_products, "available", lambda: False)
    calls.clear()
    reference = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes, max_new_tokens=6)
    assert not calls
    assert torch.equal(fast.sequences, reference.sequences)
    torch.testing.assert_close(fast.iou_scores, reference.iou_scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.pred_masks, reference.pred_masks, atol=1e-3, rtol=1e-3)
