"""Weights files that are unsafe, corrupt or for another model (issue 7).

Loading never runs code from a file: ``.safetensors`` holds only tensors, and ``.pt``/``.pth``
files are read with ``torch.load(weights_only=True)``, which refuses pickled objects.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import mirnet
from mirnet.archs import MIRNet
from mirnet.cli import main
from mirnet.weights import WeightsError, arch_config, load_weights, save_weights


class Payload:
    """Pickles to a call of ``os.system``: what a malicious checkpoint would hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class CreatesFile:
    """Pickles to a call that creates a file, without a shell."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class Innocent:
    """Any class instance: not a tensor or a plain container, so refused too."""

    def __init__(self):
        self.weights = torch.zeros(2)


@pytest.fixture(scope="module")
def nano_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return mirnet.build_model("nano").state_dict()


def _write_malicious(path: Path, marker: Path, how: str, state: dict[str, torch.Tensor]) -> None:
    if how == "torch.save os.system":
        torch.save({"model": state, "arch": arch_config("nano"), "hook": Payload(f"touch {marker}")}, path)
    elif how == "torch.save open":
        torch.save({"model": state, "extra": CreatesFile(marker)}, path)
    elif how == "pickle os.system":
        with open(path, "wb") as handle:
            pickle.dump(Payload(f"touch {marker}"), handle)
    else:
        torch.save(Innocent(), path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # plain pickle.dump's protocol, not torch's
@pytest.mark.parametrize("how", ["torch.save os.system", "torch.save open", "pickle os.system", "instance"])
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, nano_state, how, suffix):
    path, marker = tmp_path / f"evil{suffix}", tmp_path / "payload_ran"
    _write_malicious(path, marker, how, nano_state)
    with pytest.raises(WeightsError) as info:
        load_weights(path, name="nano")
    message = str(info.value)
    assert str(path) in message and "never arbitrary pickled code" in message and ".safetensors" in message
    assert "\n" not in message and "weights_only=False" not in message
    assert not marker.exists(), "the pickled payload ran"


def test_pickled_code_through_the_cli(tmp_path, nano_state, capsys):
    path, marker = tmp_path / "evil.pth", tmp_path / "payload_ran"
    _write_malicious(path, marker, "torch.save os.system", nano_state)
    (tmp_path / "a.png").write_bytes(b"")  # never reached: the weights are refused first
    assert main(["enhance", str(tmp_path / "a.png"), "--weights", str(path), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"mirnet enhance: error: {path}: refused or unreadable as a weights-only")
    assert not marker.exists()


def test_plain_checkpoint_still_loads(tmp_path, nano_state):
    # A weights-only checkpoint (tensors, dicts, numbers, strings) is fine, as training writes them.
    torch.save({"model": nano_state, "arch": arch_config("nano"), "name": "nano"}, tmp_path / "ok.pt")
    model, info = load_weights(tmp_path / "ok.pt")
    assert info["name"] == "nano"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), nano_state.values()))
    torch.save(nano_state, tmp_path / "bare.pth")  # a bare state dict needs the configuration named
    assert load_weights(tmp_path / "bare.pth", name="nano")[1]["name"] == "nano"
    with pytest.raises(WeightsError, match="carries no configuration.*'nano'"):
        load_weights(tmp_path / "bare.pth")


def _tiny_weights(path: Path, label: str = "tiny") -> Path:
    """Weights of the tiny configuration, stored as ``label``."""
    return save_weights(path, mirnet.build_model("tiny"), label, arch_config(label))


def test_mismatched_shapes_name_the_configuration_they_fit(tmp_path):
    tiny = _tiny_weights(tmp_path / "tiny.safetensors")
    with pytest.raises(WeightsError, match=r"does not fit this model .*fit the 'tiny' configuration") as info:
        load_weights(tiny, name="nano")
    assert str(tiny) in str(info.value) and "\n" not in str(info.value)

    # A file whose stored configuration lies about its tensors.
    mislabelled = tmp_path / "mislabelled.safetensors"
    _tiny_weights(mislabelled, "nano")
    with pytest.raises(WeightsError, match="fit the 'tiny' configuration"):
        load_weights(mislabelled)

    # Tensors from no built-in configuration at all.
    odd = tmp_path / "odd.pt"
    torch.save(mirnet.build_model("nano", features=12).state_dict(), odd)
    with pytest.raises(WeightsError, match="fit none of the built-in configurations"):
        load_weights(odd, name="nano")


def test_mismatched_weights_through_the_cli(tmp_path, capsys):
    tiny = _tiny_weights(tmp_path / "tiny.safetensors", "nano")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")  # the model loads only when there is work
    assert main(["enhance", str(tmp_path / "x.png"), "--weights", str(tiny), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(tiny) in err and "'tiny' configuration" in err


def _truncated(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "corruption",
    ["empty", "garbage", "header cut", "data cut", "text", "bad json", "foreign config", "wrong dtype"],
)
def test_corrupt_safetensors_gives_a_clear_error(tmp_path, nano_state, corruption):
    path = tmp_path / "model.safetensors"
    save_weights(path, mirnet.build_model("nano"), "nano", arch_config("nano"))
    tensors = {k: v.contiguous() for k, v in nano_state.items()}
    if corruption == "empty":
        path.write_bytes(b"")
    elif corruption == "garbage":
        path.write_bytes(os.urandom(4096))
    elif corruption == "header cut":
        _truncated(path, 0.01)
    elif corruption == "data cut":
        _truncated(path, 0.9)
    elif corruption == "text":
        # What a clone without Git LFS holds instead of the weights.
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    elif corruption == "bad json":
        save_file(tensors, str(path), metadata={"mirnet.name": "nano", "mirnet.arch": "{features: 8"})
    elif corruption == "foreign config":
        arch = json.dumps({"depth": 3})
        save_file(tensors, str(path), metadata={"mirnet.name": "nano", "mirnet.arch": arch})
    else:
        save_file(
            {k: v.double() for k, v in tensors.items()},
            str(path),
            metadata={"mirnet.name": "nano", "mirnet.arch": json.dumps(arch_config("nano"))},
        )
    try:
        load_weights(path)
    except WeightsError as err:
        assert str(path) in str(err) and "\n" not in str(err)
    else:
        # float64 tensors load (cast to the model's float32); nothing else may.
        assert corruption == "wrong dtype"


def test_saved_weights_are_readable_by_others(tmp_path):
    # safetensors writes 0600 files and the atomic write goes through mkstemp (0600 too):
    # weights shared with another user (a server, a colleague) must honour the umask instead.
    path = save_weights(tmp_path / "w.safetensors", mirnet.build_model("nano"), "nano", arch_config("nano"))
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary left behind


@pytest.mark.parametrize("copies", ["3", "eight", ""])
def test_a_stored_self_ensemble_other_than_1_2_4_or_8_is_refused(tmp_path, copies):
    path = save_weights(tmp_path / "w.safetensors", mirnet.build_model("nano"), "nano", arch_config("nano"))
    tensors = {k: v for k, v in mirnet.build_model("nano").state_dict().items()}
    metadata = {"format": "pt", "mirnet.name": "nano", "mirnet.arch": json.dumps(arch_config("nano"))}
    save_file(tensors, str(path), metadata={**metadata, "mirnet.self_ensemble": copies})
    with pytest.raises(WeightsError, match="self-ensemble .* is not 1, 2, 4 or 8"):
        load_weights(path)
    with pytest.raises(WeightsError, match="1, 2, 4 or 8 copies, not 3"):  # nor written
        save_weights(path, mirnet.build_model("nano"), "nano", arch_config("nano"), self_ensemble=3)


def test_missing_and_unknown_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(tmp_path / "nope.pt")
    (tmp_path / "model.bin").write_bytes(b"\0" * 8)
    with pytest.raises(WeightsError, match="unknown weights format"):
        load_weights(tmp_path / "model.bin")


@pytest.mark.parametrize("value", [torch.zeros(3), [1, 2, 3], {"model": [1], "arch": "nano"}])
def test_checkpoint_without_weights_is_refused(tmp_path, value):
    torch.save(value, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match="holds no model weights"):
        load_weights(tmp_path / "odd.pt", name="nano")


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"features": 1024}, "does not fit"),  # a memory bomb: gigabytes if built before checking
        ({"features": 4096}, "out of bounds"),
        ({"features": -1}, "out of bounds"),
        ({"features": 8.0}, "is not a int"),
        ({"bias": "yes"}, "is not a bool"),
        ({"num_groups": 10**9}, "out of bounds"),
        ({"upsample": "magic"}, "does not build a MIRNet"),
    ],
)
def test_stored_configuration_is_checked_before_building(tmp_path, monkeypatch, nano_state, arch, message):
    path = tmp_path / "model.safetensors"
    tensors = {k: v.contiguous() for k, v in nano_state.items()}
    metadata = {"mirnet.name": "nano", "mirnet.arch": json.dumps({**arch_config("nano"), **arch})}
    save_file(tensors, str(path), metadata=metadata)
    # Nothing may be built on a real device before the shapes were compared.
    real_init = MIRNet.__init__

    def only_on_meta(self, *args, **kwargs):
        assert torch.empty(0).device.type == "meta", "a model was built before the check"
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(MIRNet, "__init__", only_on_meta)
    with pytest.raises(WeightsError, match=message) as caught:
        load_weights(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_malicious_last_pt_is_refused_by_resume_in_one_line(tmp_path, capsys):
    config = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": CreatesFile(marker)}, run / "last.pt")
    assert (
        main(["train", "--config", str(config), "--data", str(tmp_path), "--out", str(run), "--resume"]) == 1
    )
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.count("\n") == 1 and "last.pt: refused" in err
    assert "weights_only=False" not in err and "weights_only" not in err


def test_garbage_onnx_is_one_line(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(os.urandom(2048))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    args = ["enhance", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "-q"]
    assert main([*args, "--weights", str(garbage), "--backend", "onnxruntime"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a usable ONNX model" in err and str(garbage) in err
