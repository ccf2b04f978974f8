"""The experiment file: every mistake is one line naming the file and the key, found before
any data is read or any step is taken (issue 13)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from mirnet.cli import main
from mirnet.training import ConfigError, Trainer, load_config, parse_config, train

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def _with(section: str | None, key: str, value) -> dict:
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    if section is None:
        config[key] = value
    else:
        config.setdefault(section, {})[key] = value
    return config


# (section, key, value, what the message must name)
BAD_VALUES = [
    ("train", "batch_size", 0, "train.batch_size: must be at least 1"),
    ("train", "batch_size", 2.5, "train.batch_size: must be a whole number"),
    ("train", "batch_size", -4, "train.batch_size: must be at least 1"),
    ("data", "patch_size", "abc", "data.patch_size: must be a whole number"),
    ("data", "patch_size", 8, "data.patch_size: 8 is smaller than the SSIM loss's 11-pixel window"),
    ("data", "patch_size", [32, 48, 64], "data.patch_size: must be one size or [height, width]"),
    ("data", "patch_size", [32, "wide"], "data.patch_size: must be a whole number"),
    ("data", "patch_size", [8, 64], "data.patch_size: 8x64 (height x width) is smaller than the SSIM loss's"),
    ("data", "validation_pairs", 0, "data.validation_pairs: must be at least 1"),
    ("data", "validation_pairs", -1, "data.validation_pairs: must be at least 1"),
    ("data", "mixup_alpha", -1, "data.mixup_alpha: must be at least 0"),
    ("train", "epochs", "ten", "train.epochs: must be a whole number"),
    ("train", "epochs", 0, "train.epochs: must be at least 1"),
    (None, "seed", "abc", "seed: must be a whole number"),
    ("train", "betas", [0.9], "train.betas: must be a list of two numbers"),
    ("train", "betas", [0.9, 1.5], "train.betas[1]: must be less than 1"),
    ("train", "lr", -1e-3, "train.lr: must be more than 0"),
    ("train", "lr", "fast", "train.lr: must be a number"),
    ("train", "min_lr", 1.0, "train.min_lr: 1 is above train.lr"),
    ("train", "max_steps", -1, "train.max_steps: must be at least 1"),
    ("train", "checkpoint_every", 0, "train.checkpoint_every: must be at least 1"),
    ("train", "validate_every", 0, "train.validate_every: must be at least 1"),
    ("train", "ema_decay", 1.0, "train.ema_decay: must be less than 1"),
    ("train", "ema_decay", -0.5, "train.ema_decay: must be at least 0"),
    ("train", "precision", "fp8", "train.precision: must be one of auto, fp32, bf16, fp16"),
    ("train", "scheduler", "linear", "train.scheduler: must be one of plateau, cosine"),
    ("train", "tensorboard", "yes", "train.tensorboard: must be true or false"),
    ("model", "features", -3, "model.features: must be at least 1"),
    ("model", "width", 1, "model.width: must be at least 2"),
    ("model", "name", "huge", "model.name: must be one of"),
    ("loss", "charbonnier", -1, "loss.charbonnier: must be at least 0"),
    ("data", "sources", [{"name": "a", "kind": "paired"}], "data.sources[0]: missing root"),
    (
        "data",
        "sources",
        [{"name": "a", "kind": "video", "root": "x"}],
        "data.sources[0].kind: must be one of",
    ),
    (
        "data",
        "sources",
        [{"name": "a b", "kind": "paired", "root": "x"}],
        "data.sources[0].name: use letters",
    ),
    (
        "data",
        "sources",
        [{"name": "a", "kind": "identity", "root": "x", "weight": 0}],
        "weight: must be more than 0",
    ),
    ("data", "darkening", {"exposure": [0.5, 0.1]}, "data.darkening: darkening exposure"),
]


@pytest.mark.parametrize(
    "section, key, value, named", BAD_VALUES, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD_VALUES]
)
def test_bad_values_are_one_line_naming_file_and_key(
    tmp_path, capsys, monkeypatch, section, key, value, named
):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(section, key, value)))
    with pytest.raises(ConfigError, match=re.escape(named)) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)

    # The command says the same in one line, before any data is read or any model is built.
    import mirnet.data.pairs
    import mirnet.training.loop

    def forbidden(*args, **kwargs):
        raise AssertionError("data read or model built before the config was checked")

    monkeypatch.setattr(mirnet.data.pairs, "find_pairs", forbidden)
    monkeypatch.setattr(mirnet.training.loop, "Trainer", forbidden)
    assert main(["train", "--config", str(path), "--data", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mirnet train: error:") and named in line


def test_yaml_1_1_exponents_are_numbers():
    # YAML 1.1 reads 2e-4 (no dot) as a string: it must still be the number 2e-4.
    config = parse_config(_with("train", "lr", "2e-4") | {"loss": {"ssim": 0.0}})
    assert config.train.lr == 2e-4 and isinstance(config.train.lr, float)
    assert parse_config(_with("train", "min_lr", "1e-6")).train.min_lr == 1e-6
    assert parse_config(_with("data", "patch_size", "32")).data.patch_size == 32
    assert parse_config(_with("data", "patch_size", [32, "48"])).data.patch_size == [32, 48]
    assert parse_config(_with("data", "patch_size", [32, 32])).data.patch_size == 32  # a square
    assert parse_config(_with("train", "epochs", 3.0)).train.epochs == 3


def test_written_exponents_load_from_yaml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train: {lr: 2e-4, min_lr: 1e-6}\n")
    config = load_config(path)
    assert (config.train.lr, config.train.min_lr) == (2e-4, 1e-6)


def test_invalid_yaml_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  lr: [1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    config = load_config(ROOT / "configs" / name)
    assert parse_config(config.to_dict(), name) == config  # to_dict round-trips


def test_resume_with_another_model_is_one_line(paired_dataset, tmp_path):
    config = load_config(ROOT / "configs" / "smoke.yaml").to_dict()
    config["train"]["max_steps"] = 1
    train(parse_config(config), paired_dataset, tmp_path / "run", progress=False)
    config["model"]["features"] = 4
    with pytest.raises(ConfigError, match="--resume with another model") as caught:
        train(parse_config(config), paired_dataset, tmp_path / "run", resume=True, progress=False)
    assert "\n" not in str(caught.value)


def test_resume_reads_the_split_back(paired_dataset, tmp_path):
    from tests.conftest import make_pairs

    config = load_config(ROOT / "configs" / "smoke.yaml").to_dict()
    config["train"]["max_steps"] = 1
    run = tmp_path / "run"
    train(parse_config(config), paired_dataset, run, progress=False)
    split = json.loads((run / "split.json").read_text())
    # New pairs added to the folder must not move pairs between training and validation.
    make_pairs(paired_dataset, "train", 4, offset=100, low_fmt="new{i}.png", high_fmt="new{i}.png")
    config["train"]["max_steps"] = None
    trainer = Trainer(parse_config(config), paired_dataset, run, resume=True, progress=False)
    assert trainer.data.split == split
    assert [image.name for image in trainer.data.validation["validation"]] == split["validation"]
