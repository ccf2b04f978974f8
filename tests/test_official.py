"""The authors' MIRNet checkpoints: the ``official`` variant, the converter and loading (issue 15).

The golden fixture, ``tests/data/official_mirnet_reduced.safetensors``, holds only numbers: the
state dict of the official module, its input and its output. It was made outside this
repository, by running the official code unmodified (github.com/swz30/MIRNet at commit
6934e830cac66b6c774d74dc6321d4f43fc8a928, networks/MIRNet_model.py and utils/antialias.py),
torch 2.13.0 on CPU, float32::

    torch.manual_seed(0)
    model = MIRNet(n_feat=8, n_RRG=2, n_MSRB=1, height=3, width=2).eval()  # bias=False
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():  # each distinct parameter once
        if p.dim() == 1:  # the PReLU slopes, the shared one included: not left at 0.25
            p.copy_(torch.empty(p.shape).uniform_(0.05, 0.6, generator=gen))
        else:  # convolution weights (there are no biases)
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            p.copy_(torch.randn(p.shape, generator=gen) * 0.9 / fan_in**0.5)
    x = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(2))
    output = model(x)  # under torch.no_grad()

then saving ``model.state_dict()`` (every key as the official code names it, shared modules
once per use, each tensor cloned) under ``state_dict.``, with ``input`` and ``output`` (the
file's metadata repeats commit, arguments and seeds). The 0.9 gain keeps the residual
branch large (its std is 0.52) and the fusion weights far from uniform (0.10 to 0.78), so
that a wrong mapping shows. ``tests/data/official_mirnet_keys.json`` lists the keys and
shapes of the official ``MIRNet()`` at the same commit: the published checkpoints' layout.

The tests write the fixture's state dict as the official training script saves a
checkpoint: ``{"epoch", "state_dict", "optimizer"}``, keys prefixed with ``module.``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import mirnet
from mirnet.archs import MODEL_CONFIGS, MIRNet, build_model, count_parameters
from mirnet.archs.official import OFFICIAL_FLAGS, _key_map, convert_official
from mirnet.cli import main
from mirnet.inference import Enhancer
from mirnet.metrics import psnr
from mirnet.weights import WeightsError, load_weights, read_safetensors
from tests.conftest import smooth_image

DATA = Path(__file__).resolve().parent / "data"
REDUCED = dict(features=8, chan_factor=2, num_groups=2, num_blocks=1, height=3, width=2, **OFFICIAL_FLAGS)


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(official state dict, input, the official module's output)."""
    tensors = load_file(str(DATA / "official_mirnet_reduced.safetensors"))
    prefix = "state_dict."
    state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
    return state, tensors["input"], tensors["output"]


def _official_checkpoint(path: Path, state: dict[str, torch.Tensor], **extra) -> Path:
    """Save ``state`` as the official train script does, DataParallel prefix and optimiser included."""
    optimizer = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2)}},
        "param_groups": [
            {
                "lr": 2e-4,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 1e-8,
                "amsgrad": False,
                "params": [0],
            }
        ],
    }
    checkpoint = {
        "epoch": 60,
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": optimizer,
    }
    torch.save({**checkpoint, **extra}, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, golden) -> Path:
    """The fixture's checkpoint converted by ``mirnet convert``, as a user would."""
    folder = tmp_path_factory.mktemp("official")
    source = _official_checkpoint(folder / "model_reduced.pth", golden[0])
    assert main(["convert", str(source), str(folder / "reduced.safetensors")]) == 0
    return folder / "reduced.safetensors"


def test_official_configuration_has_the_published_size():
    with torch.device("meta"):
        model = build_model("official")
    assert count_parameters(model) == 31_787_419  # MIRNet() of the official code, counted
    assert model.attention_prelu is not None and len(model.state_dict()) == 606


def test_default_flags_keep_our_network():
    # Today's configurations do not change: no shared PReLU, a final fusion of their own.
    model = build_model("nano")
    assert model.attention_prelu is None
    assert all(hasattr(b, "final_fusion") for g in model.groups for b in g.body[:-1])
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())


def test_converted_checkpoint_reproduces_the_official_output(tmp_path, golden, caplog):
    state, x, expected = golden
    slopes = {float(v) for v in state.values() if v.numel() == 1}  # no biases: PReLUs only
    assert 0.25 not in slopes and len(slopes) > 40, "the fixture's PReLU slopes are randomised"
    path = _official_checkpoint(tmp_path / "model_lol.pth", state)
    with caplog.at_level(logging.WARNING, logger="mirnet"):
        model, info = load_weights(path)
    assert info == {"name": "official", "arch": REDUCED}
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # The one-line hint to convert once.
    (record,) = [r for r in caplog.records if r.name == "mirnet"]
    assert "mirnet convert" in record.getMessage() and "\n" not in record.getMessage()


def test_the_fixture_tells_the_up_samplers_apart(golden):
    # The same tensors in the paper's bilinear up-sampler miss by far more than the tolerance.
    state, x, expected = golden
    arch, ours = convert_official({"state_dict": state})
    model = MIRNet(**{**arch, "upsample": "bilinear"}).eval()
    model.load_state_dict(ours)
    with torch.no_grad():
        assert (model(x) - expected).abs().max() > 1e-2


def test_convert_writes_weights_and_a_model_card(converted, golden):
    state, x, expected = golden
    model, info = load_weights(converted)
    assert info == {"name": "official", "arch": REDUCED}
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    card = json.loads(converted.with_suffix(".json").read_text())
    source = converted.parent / "model_reduced.pth"
    assert card["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert card["source"]["file"] == "model_reduced.pth" and card["source"]["epoch"] == 60
    assert "non-commercial research" in card["license"] and "never ships" in card["license"]
    assert card["arch"] == REDUCED and card["parameters"] == count_parameters(model)
    # The card travels inside the weights file too, should the .json be lost.
    assert json.loads(read_safetensors(converted)[1]["mirnet.card"]) == card


def test_the_published_layout_maps_onto_the_official_configuration():
    # Every key of the official MIRNet() (the published checkpoints' layout), as zero tensors
    # that take no memory: the map covers the full-size network, and finds its configuration.
    listed = json.loads((DATA / "official_mirnet_keys.json").read_text())["keys"]
    taps = torch.tensor([1.0, 2.0, 1.0])
    blur = taps[:, None] * taps[None, :] / 16
    zero = torch.zeros(())
    state = {
        key: blur.expand(shape) if key.endswith(".filt") else zero.expand(shape)
        for key, shape in listed.items()
    }
    arch, ours = convert_official({"state_dict": state})
    assert arch == MODEL_CONFIGS["official"]
    with torch.device("meta"):
        model = build_model("official")
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }


# (what is wrong, how to make it, what the message must name)
BROKEN = {
    "missing key": (
        lambda s: s.pop("body.1.body.0.selective_kernel.2.fcs.1.weight"),
        "missing key body.1.body.0.selective_kernel.2.fcs.1.weight",
    ),
    "missing block conv": (  # a key the configuration is read from: still named, not misread
        lambda s: s.pop("body.0.body.0.conv_out.weight"),
        "missing key body.0.body.0.conv_out.weight",
    ),
    "shape mismatch": (
        lambda s: s.update({"body.0.body.0.up.32_4.body.1.top.2.weight": torch.zeros(16, 16, 1, 1)}),
        "body.0.body.0.up.32_4.body.1.top.2.weight: shape (16, 16, 1, 1), where the official network "
        "of this configuration has (16, 16, 3, 3)",
    ),
    "unexpected key": (
        lambda s: s.update({"body.0.body.0.extra.weight": torch.zeros(1)}),
        "unexpected key body.0.body.0.extra.weight",
    ),
    "unequal shared copies": (
        lambda s: s.update({"body.1.body.0.blocks.1.1.conv1x1.weight": torch.zeros(16, 32, 1, 1)}),
        "body.1.body.0.blocks.1.1.conv1x1.weight: differs from body.1.body.0.blocks.1.0.conv1x1.weight",
    ),
    "another blur filter": (
        lambda s: s.update({"body.0.body.0.down.8_2.body.0.top.4.filt": torch.ones(8, 1, 3, 3) / 9}),
        "body.0.body.0.down.8_2.body.0.top.4.filt: not the [1, 2, 1] binomial",
    ),
    "biases": (lambda s: s.update({"conv_in.bias": torch.zeros(8)}), "conv_in.bias: a checkpoint of"),
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(tmp_path, golden, capsys, broken):
    state = {k: v.clone() for k, v in golden[0].items()}
    change, named = BROKEN[broken]
    change(state)
    path = _official_checkpoint(tmp_path / "model.pth", state)
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    message = str(info.value)
    assert message.startswith(f"{path}: does not fit the official MIRNet network (") and named in message
    assert "\n" not in message

    out = tmp_path / "out.safetensors"
    assert main(["convert", str(path), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err
    assert not out.exists() and not out.with_suffix(".json").exists()


class Payload:
    """Pickles to a call of ``os.system``: what a malicious checkpoint would hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, golden, capsys):
    marker = tmp_path / "payload_ran"
    path = _official_checkpoint(tmp_path / "model_lol.pth", golden[0], hook=Payload(f"touch {marker}"))
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    assert "never arbitrary pickled code" in str(info.value) and "\n" not in str(info.value)

    out = tmp_path / "out.safetensors"
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    for argv in (
        ["convert", str(path), str(out)],
        ["enhance", str(tmp_path / "x.png"), "--weights", str(path), "-q"],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused or unreadable as a weights-only" in err
        assert "weights_only=False" not in err
    assert not marker.exists(), "the pickled payload ran"
    assert not out.exists()


def test_convert_refuses_files_that_are_not_official_checkpoints(tmp_path, capsys):
    ours = tmp_path / "ours.pth"
    torch.save(build_model("nano").state_dict(), ours)
    assert main(["convert", str(ours), str(tmp_path / "out.safetensors")]) == 1
    assert "not a checkpoint of the official MIRNet code" in capsys.readouterr().err
    assert main(["convert", str(ours), str(tmp_path / "out.onnx")]) == 1
    assert "written as .safetensors" in capsys.readouterr().err


# A converted official model through everything the package offers.


def _photo(folder: Path, height: int = 44, width: int = 60) -> Path:
    path = folder / "dark.png"
    Image.fromarray(smooth_image(3, height, width) // 4).save(path)
    return path


def test_enhance_accepts_converted_and_raw_checkpoints(tmp_path, converted, caplog):
    photo = _photo(tmp_path)
    assert main(["enhance", str(photo), "--weights", str(converted), "-o", str(tmp_path / "a"), "-q"]) == 0
    assert not [r for r in caplog.records if r.name == "mirnet"]  # converted: no hint
    raw = converted.parent / "model_reduced.pth"
    with caplog.at_level(logging.WARNING, logger="mirnet"):
        assert main(["enhance", str(photo), "--weights", str(raw), "-o", str(tmp_path / "b"), "-q"]) == 0
    assert any("mirnet convert" in r.getMessage() for r in caplog.records)
    a, b = (Image.open(tmp_path / d / "dark_enhanced.png") for d in "ab")
    assert a.size == (60, 44) and a.tobytes() == b.tobytes()


def test_evaluate_accepts_a_converted_checkpoint(tmp_path, converted, paired_dataset):
    out = tmp_path / "evaluation"
    argv = ["evaluate", "--weights", str(converted), "--data", str(paired_dataset), "--no-classical"]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["models"][0]["label"] == "MIRNet official"
    assert results["meta"]["models"][0]["arch"] == REDUCED


def test_onnx_export_of_a_converted_checkpoint_matches_pytorch(tmp_path, converted, golden):
    from mirnet.export import OnnxModel

    onnx_path = tmp_path / "official.onnx"
    assert main(["export", "--weights", str(converted), str(onnx_path)]) == 0
    model, _ = load_weights(converted)
    x = torch.rand(1, 3, 36, 52, generator=torch.Generator().manual_seed(0))  # not the export's size
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(onnx_path)(x), model(x), rtol=0, atol=1e-4)


def test_tiles_of_a_converted_checkpoint_agree_with_the_whole_photo(converted):
    enhancer = mirnet.load_model(converted, device="cpu")
    photo = torch.rand(3, 72, 100, generator=torch.Generator().manual_seed(0)) * 0.3
    whole = enhancer.enhance_tensor(photo)
    tiled = Enhancer(enhancer.model, enhancer.info, device="cpu", tile=48, overlap=12).enhance_tensor(photo)
    assert enhancer.tile_for(72, 100) == 0 and psnr(tiled, whole) >= 35.0


def _in_official_layout(model: MIRNet) -> dict[str, torch.Tensor]:
    """An official network's tensors as the official code names them (the map, reversed)."""
    state, official = model.state_dict(), {}
    for key, ours in _key_map(model):
        if ours is None:  # a blur-pool filter, over the channels of its step's first conv
            channels = official[key.rsplit(".", 3)[0] + ".top.0.weight"].shape[0]
            official[key] = (torch.tensor([1.0, 2.0, 1.0]).outer(torch.tensor([1.0, 2.0, 1.0])) / 16).repeat(
                channels, 1, 1, 1
            )
        else:
            official[key] = state[ours].clone()
    return official


@pytest.mark.slow  # about 16 s: compiling even the smallest official network takes that long
def test_fast_path_runs_a_converted_checkpoint(tmp_path):
    # --fast: torch.compile (frozen weights: the borrowed PReLU and the transposed convs
    # fold like the rest), in bf16 where the CPU has it. One group of one block: the
    # compilation grows with the graph (49 s for the golden fixture's two groups).
    torch.manual_seed(0)
    model = build_model("official", features=8, num_groups=1, num_blocks=1)
    with torch.no_grad():
        model.attention_prelu.weight.fill_(0.1)
    source = _official_checkpoint(tmp_path / "small.pth", _in_official_layout(model))
    weights = tmp_path / "small.safetensors"
    assert main(["convert", str(source), str(weights)]) == 0
    assert all(
        torch.equal(a, b)
        for a, b in zip(load_weights(weights)[0].state_dict().values(), model.state_dict().values())
    )

    eager = mirnet.load_model(weights, device="cpu")
    fast = mirnet.load_model(weights, device="cpu", fast=True)
    photo = torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0)) * 0.3
    assert psnr(fast.enhance_tensor(photo), eager.enhance_tensor(photo)) >= 40.0
