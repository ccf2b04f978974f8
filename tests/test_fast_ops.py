"""The CPU inference forms of mirnet.archs.fast_ops compute the plain operations' values."""

import pytest
import torch
import torch.nn.functional as F

from mirnet.archs import MODEL_CONFIGS, build_model, fast_ops


def _channels_last(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(1, 16, 20, 30), (2, 5, 3, 7), (1, 3, 1, 1), (1, 4, 1, 6), (1, 4, 5, 1)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_upsample2x_is_bilinear_interpolation(shape, dtype):
    torch.manual_seed(0)
    x = _channels_last(*shape, dtype=dtype)
    with torch.no_grad():
        fast = fast_ops.applies(x)
        got = fast_ops.upsample2x(x)
    assert fast or shape[2:] == (1, 1)  # 1x1: a channels-last tensor is also NCHW
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last) or not fast
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)


def test_they_stay_plain_with_gradients_in_nchw_and_when_switched_off():
    x = _channels_last(1, 4, 6, 8)
    assert not fast_ops.applies(x)  # gradients enabled: training is unchanged
    with torch.no_grad():
        assert fast_ops.applies(x)
        assert not fast_ops.applies(x.contiguous())  # NCHW
        with fast_ops.plain_ops():
            assert not fast_ops.applies(x)
        assert fast_ops.applies(x)


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
@pytest.mark.parametrize("batch", [1, 2])
def test_every_variant_computes_the_same_function_with_them(name, batch):
    # fp32, channels-last: the faster forms (the dual attention units' fusion without a
    # concatenation, the up-sampling) against the plain formulas, on one set of weights.
    torch.manual_seed(0)
    model = build_model(name).eval().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 24, 36).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = model(x)
        with fast_ops.plain_ops():
            plain = model(x)
    torch.testing.assert_close(fast, plain, rtol=0, atol=2e-5)


def test_compilers_trace_the_plain_operations_in_one_graph():
    # torch.compile (--fast) and torch.export (AOTInductor, ONNX) do their own fusion: the
    # checks must fold to "plain" while tracing, without breaking the graph.
    import torch._dynamo

    model = build_model("nano").eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    targets = {str(node.target) for graph in explained.graphs for node in graph.graph.nodes}
    names = " ".join(targets)  # the plain formulas: interpolation, concatenation, no lerp
    assert "interpolate" in names and "cat" in names and "lerp" not in names
    with torch.no_grad():
        exported = torch.export.export(model, (x,))
    assert not [node for node in exported.graph.nodes if "lerp" in str(node.target)]
