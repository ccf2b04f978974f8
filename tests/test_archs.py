"""The network's contract: exact sizes, shapes, gradients, pinned numerics, old weights."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mirnet.archs import MODEL_CONFIGS, MIRNet, build_model, count_parameters
from mirnet.archs.mirnet_arch import (
    BlurPool,
    GlobalAveragePool,
    ResidualUpsample,
    SpatialAttention,
    _channel_max,
)
from mirnet.weights import WeightsError, arch_config, bundled_models, load_weights

DATA = Path(__file__).resolve().parent / "data"

PARAMETERS = {
    "paper": 31_799_730,
    "official": 31_787_419,  # the official code's MIRNet(), counted (tests/test_official.py)
    "small": 5_301_644,
    "medium": 1_327_404,
    "tiny": 664_134,
    "nano": 84_019,
}


def _meta(name: str, **overrides) -> MIRNet:
    with torch.device("meta"):  # shapes only: counting needs no memory
        return build_model(name, **overrides)


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_parameter_counts_are_exact(name):
    assert set(PARAMETERS) == set(MODEL_CONFIGS), "pin the size of every named configuration"
    assert count_parameters(_meta(name)) == PARAMETERS[name]


def test_paper_parameter_breakdown_accounts_for_the_official_count():
    # The official code (github.com/swz30/MIRNet, networks/MIRNet_model.py at 6934e83) gives
    # 31,787,419 for MIRNet(): counted by instantiating it. This network has 12,311 more: each
    # of the 6 blocks' final fusion is a SelectiveKernelFeatureFusion of its own (2,049; the
    # official code reuses the full-resolution exchange's), and each of the 18 dual attention
    # units has its own PReLU where the official ones all share one (18 - 1 = 17).
    # Its up-sampler's transposed 3x3 conv has as many weights as our 3x3 conv + bilinear.
    model = _meta("paper")
    n = count_parameters
    block = model.groups[0].body[0]
    assert n(model.conv_in) + n(model.conv_out) == 3_456
    assert [n(group) for group in model.groups] == [10_598_758] * 3
    assert n(model.groups[0].body[2]) == 36_864  # the group's closing 3x3 conv
    assert n(block) == 5_280_947
    assert [n(unit) for unit in block.attention[0]] == [82_995, 331_827, 1_327_155]
    resample = {(s, d): n(block.resample[s][d]) for s in range(3) for d in range(3) if s != d}
    assert resample == {
        (0, 1): 57_346,
        (0, 2): 286_724,
        (1, 2): 229_378,  # down
        (1, 0): 180_226,
        (2, 1): 720_898,
        (2, 0): 901_124,  # up
    }
    assert [n(fusion) for fusion in block.exchange] == [2_049, 8_193, 32_769]
    assert [n(up) for up in block.final_upsample] == [0, 180_226, 901_124]
    assert n(block.final_fusion) == 2_049 and n(block.conv_out) == 36_864
    assert 1_741_977 + 2_375_696 + 43_011 + 1_081_350 + 2_049 + 36_864 == n(block)

    blocks = [b for group in model.groups for b in group.body[:-1]]
    final_fusions = sum(n(b.final_fusion) for b in blocks)
    attention_prelus = sum(n(unit.body[1]) for b in blocks for column in b.attention for unit in column)
    assert (final_fusions, attention_prelus) == (12_294, 18)
    assert n(model) - final_fusions - (attention_prelus - 1) == 31_787_419
    upsampler = block.final_upsample[1][0]  # 128 -> 64 channels
    transposed = nn.ConvTranspose2d(128, 128, 3, stride=2, padding=1, output_padding=1, bias=False)
    assert n(transposed) == n(upsampler.body[2])


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_odd_sizes_keep_their_shape_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    x = torch.rand(1, 3, 37, 53)
    out = model(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None, f"no gradient reaches {key}"
        assert torch.isfinite(parameter.grad).all(), key


def _reference_model() -> tuple[MIRNet, torch.Tensor]:
    torch.manual_seed(0)
    model = MIRNet(**MODEL_CONFIGS["tiny"]).eval()
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1234))
    return model, x


def test_seeded_initial_weights_are_unchanged():
    # Per parameter, in parameters() order: (sum, sum of absolute values), stored before the
    # resamplers' parts were named. The order of creation decides the weights a seed gives.
    model, _ = _reference_model()
    reference = np.load(DATA / "tiny_seed0_init.npy")
    got = np.array([[p.double().sum().item(), p.double().abs().sum().item()] for p in model.parameters()])
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-9)


def test_seeded_forward_is_unchanged():
    # tiny, torch.manual_seed(0), input from Generator().manual_seed(1234): output stored
    # before the refactoring that named the resamplers' parts and moved tiling out.
    model, x = _reference_model()
    with torch.no_grad():
        out = model(x)[0].numpy()
    np.testing.assert_allclose(out, np.load(DATA / "tiny_seed0_reference.npy"), rtol=0, atol=1e-6)


# The parts of both resamplers before they were named (what weights saved then hold).
_NEW_TO_OLD = {
    "body.0.": "main.0.",
    "body.1.": "main.1.",
    "body.2.": "main.2.",
    "body.3.": "main.3.",
    "body_project.": "main.5.",
    "shortcut_project.": "shortcut.1.",
}


# (the resampler's own prefix)(its part)(the tensor's name), the part as in _NEW_TO_OLD.
_RESAMPLER_PART = re.compile(
    r"^(.*\.(?:resample\.\d+\.\d+|final_upsample\.\d+)\.\d+\.)(\w+\.(?:\d+\.)?)(\w+)$"
)


def _old_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    old = {}
    for key, value in state.items():
        match = _RESAMPLER_PART.match(key)
        if match:  # e.g. groups.0.body.0.resample.0.1.0.body_project.weight -> ...0.main.5.weight
            resampler, part, name = match.groups()
            key = resampler + _NEW_TO_OLD[part] + name
        old[key] = value
    return old


def test_weights_in_the_old_resampler_layout_load_everywhere(tmp_path):
    torch.manual_seed(1)
    trained = build_model("nano", bias=True).eval()
    old = _old_layout(trained.state_dict())
    assert any(".main.5." in k for k in old) and any(".shortcut.1." in k for k in old)
    assert old.keys() != trained.state_dict().keys()
    x = torch.rand(1, 3, 21, 30, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained(x)

    model = build_model("nano", bias=True).eval()  # plain load_state_dict (training's resume)
    model.load_state_dict(old)
    with torch.no_grad():
        assert torch.equal(model(x), expected)

    arch = arch_config("nano", bias=True)  # weights files and training checkpoints
    torch.save({"model": old, "name": "nano", "arch": arch}, tmp_path / "old.pt")
    save_file(old, str(tmp_path / "old.safetensors"), metadata={"mirnet.arch": json.dumps(arch)})
    for path in (tmp_path / "old.pt", tmp_path / "old.safetensors"):
        loaded, _ = load_weights(path)
        with torch.no_grad():
            assert torch.equal(loaded(x), expected), path

    # A bare old-layout state dict: its configuration is still recognised.
    torch.save(_old_layout(build_model("nano").state_dict()), tmp_path / "bare.pt")
    with pytest.raises(WeightsError, match="fit the 'nano' configuration"):
        load_weights(tmp_path / "bare.pt")

    stray = {**old, "groups.0.body.0.resample.0.1.0.main.4.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build_model("nano", bias=True).load_state_dict(stray)


def test_the_previous_release_in_the_old_layout_still_loads():
    # The previous shipped tiny (main.5 / shortcut.1 keys) is kept with its training run; it
    # must load through the renaming, while the shipped weights use the named parts.
    from safetensors import safe_open

    from mirnet.weights import load_weights

    old = (
        Path(__file__).resolve().parents[1]
        / "experiments"
        / "tiny_finetune256_real_pairs"
        / "model.safetensors"
    )
    with safe_open(str(old), framework="pt") as handle:
        assert any(k.endswith("main.5.weight") for k in handle.keys())
    with safe_open(str(bundled_models()["tiny"]), framework="pt") as handle:
        assert any("body_project" in k for k in handle.keys())
    model, info = load_weights(old)
    assert info["name"] == "tiny" and model(torch.rand(1, 3, 24, 24)).isfinite().all()


def test_upsampling_once_after_the_convs_is_the_papers_function():
    # ResidualUpsample interpolates the sum of its branches once, after their 1x1 convs; the
    # paper interpolates each branch before its conv. Linear maps commute, so both agree.
    torch.manual_seed(0)
    block = ResidualUpsample(16, factor=2, bias=True).eval()
    x = torch.randn(2, 16, 9, 14)
    with torch.no_grad():
        paper = block.body_project(block.upsample(block.body(x))) + block.shortcut_project(block.upsample(x))
        assert torch.allclose(block(x), paper, atol=1e-5)


def test_global_pooling_is_a_plain_mean():
    x = torch.randn(2, 5, 7, 3)
    assert torch.equal(GlobalAveragePool()(x), x.mean(dim=(2, 3), keepdim=True))


@pytest.mark.parametrize("shape", [(2, 5, 8, 10), (1, 4, 7, 9), (1, 3, 2, 2), (1, 3, 6, 3), (1, 16, 40, 60)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_blur_pool_is_the_reflect_padded_blur(shape, channels_last):
    # Even sizes skip the padded copy and recompute the first row and column (see BlurPool);
    # values and gradients must be those of the plain reflect-padded, strided [1, 2, 1] blur.
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    pool = BlurPool(shape[1]).double()
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    kernel = (taps[:, None] * taps[None, :] / 16).expand(shape[1], 1, 3, 3)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = torch.nn.functional.conv2d(padded, kernel, stride=2, groups=shape[1])
    got = pool(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    assert torch.allclose(got, expected, atol=1e-12)
    weights = torch.randn_like(expected)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.allclose(grad_got, grad_expected, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_attention_gates_with_channel_max_and_mean(channels_last):
    torch.manual_seed(0)
    attention = SpatialAttention(16).double()
    x = torch.randn(2, 16, 12, 14, dtype=torch.float64)
    pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
    expected = x * torch.sigmoid(attention.conv(pooled))
    got = attention(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("channels", [1, 3, 12, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_max_is_amax_over_channels(channels, dtype):
    # 12 halves twice, then the 3 left are reduced by amax; 3 by amax alone.
    torch.manual_seed(0)
    x = torch.randn(2, channels, 5, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    assert torch.equal(_channel_max(x), x.amax(dim=1, keepdim=True))


def test_channel_max_trains_with_amax_gradients_where_channels_tie():
    # Three of four channels tie for the maximum: amax shares the gradient equally (1/3 each),
    # a tree of maxima would not, so with gradients the channel max is amax itself.
    x = torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64).reshape(1, 4, 1, 1).requires_grad_()
    (grad,) = torch.autograd.grad(_channel_max(x).sum(), x)
    assert torch.allclose(grad.flatten(), torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0], dtype=torch.float64))
