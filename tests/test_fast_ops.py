"""The CPU inference forms of mirnet.archs.fast_ops compute the plain operations' values."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from mirnet.archs import MODEL_CONFIGS, build_model, fast_ops
from mirnet.archs.mirnet_arch import ChannelAttention, DualAttentionUnit


class _CallCounter(TorchFunctionMode):
    """Counts the torch functions called (lerp, cat, bmm): which form ran."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


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


@pytest.mark.parametrize("shape", [(1, 16, 40, 60), (2, 3, 5, 7), (1, 4, 1, 9)])
def test_spatial_mean_is_the_mean_over_height_and_width(shape):
    torch.manual_seed(0)
    x = _channels_last(*shape).abs()
    with torch.no_grad():
        assert torch.equal(fast_ops.spatial_mean(x), x.mean(dim=(2, 3), keepdim=True))  # fp32: the mean
        low = x.bfloat16()
        assert fast_ops.applies(low)
        got = fast_ops.spatial_mean(low)  # bf16: a product with ones, summed in fp32
        expected = low.mean(dim=(2, 3), keepdim=True)
        with torch.autocast("cpu", dtype=torch.float16):  # would make the product fp16
            assert torch.equal(fast_ops.spatial_mean(low), got)
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    # The product rounds the sum before dividing: at most one bf16 step (2^-8 relative) apart.
    torch.testing.assert_close(got.double(), expected.double(), rtol=2**-7, atol=0)


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
    fast_calls, plain_calls = _CallCounter(), _CallCounter()
    with torch.no_grad():
        with fast_calls:
            fast = model(x)
        with fast_ops.plain_ops(), plain_calls:
            plain = model(x)
    torch.testing.assert_close(fast, plain, rtol=0, atol=2e-5)
    # The faster forms did run: lerps for the up-sampling, half the concatenations.
    assert fast_calls.calls["lerp"] > 0 and plain_calls.calls["lerp"] == 0
    assert 2 * fast_calls.calls["cat"] == plain_calls.calls["cat"] > 0


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_in_bf16_they_stay_within_rounding_of_the_plain_formulas(name):
    # What the default CPU path runs: bf16 weights and photo, channels-last, no gradients.
    torch.manual_seed(0)
    model = build_model(name).eval().to(torch.bfloat16, memory_format=torch.channels_last)
    x = torch.rand(1, 3, 24, 36, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    calls = _CallCounter()
    with torch.no_grad():
        with calls:
            fast = model(x).float()
        with fast_ops.plain_ops():
            plain = model(x).float()
    assert calls.calls["bmm"] > 0  # the pooling as a product with ones
    difference = (fast - plain).abs()
    assert difference.max() <= 2**-6 and difference.mean() < 2e-3  # two bf16 steps near 1


def test_the_attention_fusion_stays_plain_where_its_modules_are_hooked():
    torch.manual_seed(0)
    unit = DualAttentionUnit(8).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 8, 6, 10).contiguous(memory_format=torch.channels_last)
    seen = []
    unit.fuse.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        hooked = unit(x)
        with fast_ops.plain_ops():
            plain = unit(x)
    assert len(seen) == 2  # the hook ran in both calls
    torch.testing.assert_close(hooked, plain, rtol=0, atol=0)


def test_the_attention_fusion_stays_plain_where_channel_attention_is_replaced():
    class Doubled(ChannelAttention):  # a user's own attention: its forward, not its gate
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    unit = DualAttentionUnit(8).eval().to(memory_format=torch.channels_last)
    doubled = Doubled(8)
    doubled.load_state_dict(unit.channel_attention.state_dict())
    unit.channel_attention = doubled
    x = torch.rand(1, 8, 6, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = unit(x)
        with fast_ops.plain_ops():
            plain = unit(x)
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)


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


@pytest.mark.parametrize("batch", [1, 2])
def test_the_attention_fusion_keeps_a_bias(batch):
    # No registered variant has biases in its units; the faster form must still add them.
    torch.manual_seed(0)
    unit = DualAttentionUnit(8, bias=True).eval().to(memory_format=torch.channels_last)
    assert unit.fuse.bias is not None
    x = torch.rand(batch, 8, 6, 10).contiguous(memory_format=torch.channels_last)
    calls = _CallCounter()
    with torch.no_grad():
        with calls:
            fast = unit(x)
        with fast_ops.plain_ops():
            plain = unit(x)
    assert calls.calls["cat"] == 1  # the spatial attention's pooling only: the fusion's is gone
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-6)
