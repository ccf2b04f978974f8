import csv
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mirnet
from mirnet.cli import main
from mirnet.training import Trainer, TrainingDiverged, load_config, parse_config, train

ROOT = Path(__file__).resolve().parents[1]


def _config(**train_overrides):
    config = load_config(ROOT / "configs" / "smoke.yaml").to_dict()
    config["train"].update(train_overrides)
    return parse_config(config)


def test_smoke_train_resume_export_evaluate(paired_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    # Start, stop after 3 steps (as an interruption would), then resume to the end.
    assert train(_config(max_steps=3), paired_dataset, run, progress=False) is not None
    first = torch.load(run / "last.pt", weights_only=True)["position"]
    assert first["global_step"] == 3
    weights = train(_config(), paired_dataset, run, resume=True, progress=False)
    assert weights == run / "model.safetensors"
    position = torch.load(run / "last.pt", weights_only=True)["position"]
    assert position["epoch"] == 2 and position["global_step"] == 8  # 8 train pairs, batch 2, 2 epochs

    card = json.loads((run / "model.json").read_text())
    assert card["name"] == "nano" and card["validation"]["psnr"] > 0
    assert len(card["data"]["validation_pairs"]) == 2
    split = json.loads((run / "split.json").read_text())
    assert not set(split["validation"]) & set(split["train"])
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"] and "val_psnr" in rows[0]
    # Epoch 2 ran all its 4 steps in one go; "seconds" is rounded to 0.1 s.
    assert abs(4 * float(rows[1]["seconds_per_step"]) - float(rows[1]["seconds"])) <= 0.051
    assert (run / "curves.png").stat().st_size > 0
    assert set(load_file(run / "model.safetensors"))  # plain tensors, no pickle

    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--weights", str(weights), "--data", str(paired_dataset), "--out", str(out), "-q"])
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert "MIRNet nano" in results["mean"] and "CLAHE" in results["mean"]
    assert results["mean"]["MIRNet nano"]["images"] == 3
    assert (out / "comparison.png").exists() and "| MIRNet nano |" in (out / "results.md").read_text()
    assert "PSNR" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "fp32-ema"])
def test_interrupted_and_resumed_run_matches_uninterrupted(paired_dataset, tmp_path, precision):
    # fp16 is the AMP path of a GPU without bf16, on the CPU here: autocast, a GradScaler (whose
    # state must resume too) and clipping of the unscaled gradient. With a moving average, the
    # average (what is exported) must resume too.
    overrides = {
        "precision": precision.removesuffix("-ema"),
        "grad_clip": 0.01 if precision == "fp16" else None,
    }
    if precision.endswith("-ema"):
        overrides["ema_decay"] = 0.7
    straight = train(_config(**overrides), paired_dataset, tmp_path / "a", progress=False)
    train(_config(max_steps=5, **overrides), paired_dataset, tmp_path / "b", progress=False)  # mid-epoch 2
    if precision == "fp16":
        saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["scaler"]
        assert saved["_growth_tracker"] == 5  # 5 steps without an overflow since the scale was set
        trainer = Trainer(_config(**overrides), paired_dataset, tmp_path / "b", resume=True, progress=False)
        assert trainer.scaler.state_dict() == saved
    resumed = train(_config(**overrides), paired_dataset, tmp_path / "b", resume=True, progress=False)
    if precision.endswith("-ema"):  # the average itself resumed, whichever epoch was exported
        ends = [torch.load(tmp_path / run / "last.pt", weights_only=True)["ema"] for run in "ab"]
        assert ends[0].keys() == ends[1].keys()
        assert all(torch.equal(ends[0][key], ends[1][key]) for key in ends[0])
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "a" / "log.csv").read_text() != ""


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # no training here
def test_a_finished_cosine_given_more_epochs_resumes_on_the_longer_cosine(paired_dataset, tmp_path):
    # CosineAnnealingLR steps recursively from the previous rate, so a schedule at its minimum
    # would stay there; extending a finished run must continue as if planned longer from the start.
    cosine = {"scheduler": "cosine", "min_lr": 1e-5}
    planned = Trainer(_config(epochs=3, **cosine), paired_dataset, tmp_path / "planned", progress=False)
    extended = tmp_path / "extended"
    train(_config(epochs=1, **cosine), paired_dataset, extended, progress=False)
    finished = torch.load(extended / "last.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert finished == pytest.approx(1e-5)
    resumed = Trainer(_config(epochs=3, **cosine), paired_dataset, extended, resume=True, progress=False)
    planned.scheduler.step()  # the 3-epoch plan after its first epoch
    for trainer in (planned, resumed):
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.75)
    for _ in range(2):
        planned.scheduler.step()
        resumed.scheduler.step()
        rates = [trainer.optimizer.param_groups[0]["lr"] for trainer in (planned, resumed)]
        assert rates[1] == pytest.approx(rates[0])
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_refuses_to_overwrite_a_run_without_resume(paired_dataset, tmp_path):
    train(_config(max_steps=1), paired_dataset, tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_config(max_steps=1), paired_dataset, tmp_path / "run", progress=False)


def test_nan_loss_stops_without_writing_weights(paired_dataset, tmp_path):
    trainer = Trainer(_config(), paired_dataset, tmp_path / "run", progress=False)
    with torch.no_grad():
        trainer.model.conv_out.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="nan"):
        trainer.fit()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_test_pairs_are_never_read(paired_dataset, tmp_path, monkeypatch):
    import mirnet.data.pairs as data

    read = []
    original = data.read_image
    monkeypatch.setattr(data, "read_image", lambda p: read.append(Path(p)) or original(p))
    train(_config(max_steps=2), paired_dataset, tmp_path / "run", progress=False)
    assert read and all("test" not in p.parts for p in read)


@pytest.mark.parametrize(
    "text, named",
    [
        ("modle: {name: nano}\n", "modle"),
        ("train: {epoch: 3}\n", "train: unknown keys ['epoch']"),  # the default 100 would apply
        ("model: {name: nano, featurs: 8}\n", "model: unknown keys ['featurs']"),
        ("data: 4\n", "data: must be a mapping"),
    ],
)
def test_unknown_config_keys_are_refused(tmp_path, capsys, text, named):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ValueError, match=re.escape(named)):
        load_config(tmp_path / "bad.yaml")
    # ...and the command says so in one line, before reading any data.
    assert main(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(tmp_path / "none")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mirnet train: error:") and named in line


def test_model_section_accepts_architecture_overrides(tmp_path):
    (tmp_path / "ok.yaml").write_text("model: {name: nano, features: 4}\n")
    assert load_config(tmp_path / "ok.yaml").model == {"name": "nano", "features": 4}


def test_evaluate_warns_about_a_folder_without_splits_and_unknown_figure_names(tmp_path, capsys):
    from tests.conftest import make_pairs

    flat = make_pairs(tmp_path / "flat", ".", 3)  # flat/{low,high}: the same pairs for every split
    out = tmp_path / "eval"
    args = ["evaluate", "--data", str(flat), "--classical-only", "--figure", "nope", "--out", str(out), "-q"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "has no train/test split" in captured.err
    assert "--figure: no image named nope" in captured.err
    assert not (out / "comparison.png").exists() and "comparison.png" not in captured.out


def test_log_after_resume_at_an_epoch_boundary(paired_dataset, tmp_path):
    # Stopped right after an epoch's last step but before its end-of-epoch bookkeeping: the
    # resumed run must still log that epoch's mean loss over all its steps, once.
    straight = tmp_path / "straight"
    train(_config(), paired_dataset, straight, progress=False)
    run = tmp_path / "run"
    train(_config(max_steps=4), paired_dataset, run, progress=False)  # 4 steps = one epoch
    (run / ".last.pt.stale.tmp").write_bytes(b"left by a SIGKILL mid-write")
    train(_config(), paired_dataset, run, resume=True, progress=False)
    assert _rows_without_time(run / "log.csv") == _rows_without_time(straight / "log.csv")
    assert not list(run.glob(".*.tmp"))  # a resume clears stale temporary files


def _rows_without_time(log: Path) -> list[dict[str, str]]:
    with open(log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k not in {"seconds", "seconds_per_step"}} for row in rows]


def test_the_moving_average_of_the_weights_is_validated_and_exported(paired_dataset, tmp_path):
    decay = 0.6
    trainer = Trainer(_config(epochs=1, ema_decay=decay), paired_dataset, tmp_path / "run", progress=False)
    steps = []  # each step's weights, to average here as the formula says
    trainer.optimizer.register_step_post_hook(
        lambda *_: steps.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
    )
    weights = trainer.fit()
    trainer.close()
    assert len(steps) == 4  # 8 training pairs, batch 2
    average = dict(steps[0])  # the average starts at the first step's weights
    for step in steps[1:]:
        average = {k: decay * average[k] + (1 - decay) * step[k] for k in average}
    exported, last = load_file(weights), steps[-1]
    assert exported.keys() == average.keys()
    for key in exported:
        assert torch.allclose(exported[key], average[key], atol=1e-6), key
    assert any(not torch.allclose(exported[k], last[k]) for k in exported)  # not the last step's
    # The validation score in the card is the average's.
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    from mirnet.training.validation import validate

    model = mirnet.build_model("nano")
    model.load_state_dict(exported)
    (images,) = trainer.data.validation.values()  # a single-folder run: one set
    score = validate(model, images, torch.device("cpu"))
    assert card["validation"]["psnr"] == pytest.approx(score["psnr"], abs=1e-4)
    # Loading best.pt as weights gives the average too, the weights it was chosen on.
    from mirnet.weights import load_weights

    from_checkpoint, _ = load_weights(tmp_path / "run" / "best.pt")
    assert all(torch.equal(from_checkpoint.state_dict()[k], exported[k]) for k in exported)


def test_a_run_resumed_with_an_average_starts_it_at_its_restored_weights(paired_dataset, tmp_path):
    train(_config(max_steps=3), paired_dataset, tmp_path / "run", progress=False)  # no average kept
    trainer = Trainer(_config(ema_decay=0.9), paired_dataset, tmp_path / "run", resume=True, progress=False)
    restored, average = trainer.model.state_dict(), trainer.scored_model.state_dict()
    assert all(torch.equal(restored[key], average[key]) for key in restored)
    trainer.close()


def test_fine_tuning_starts_from_the_given_weights(paired_dataset, tmp_path):
    from mirnet.weights import WeightsError, arch_config, save_weights

    torch.manual_seed(123)
    nano, tiny = mirnet.build_model("nano"), mirnet.build_model("tiny")
    start = save_weights(tmp_path / "start.safetensors", nano, "nano", arch_config("nano"))
    trainer = Trainer(_config(init_weights=str(start)), paired_dataset, tmp_path / "run", progress=False)
    begun, model = load_file(start), trainer.model.state_dict()
    assert begun.keys() == model.keys() and all(torch.equal(begun[key], model[key]) for key in begun)

    other = save_weights(tmp_path / "tiny.safetensors", tiny, "tiny", arch_config("tiny"))
    with pytest.raises(WeightsError, match="init_weights has configuration"):
        train(_config(init_weights=str(other)), paired_dataset, tmp_path / "run2", progress=False)


def test_a_deeper_network_grows_from_a_shallower_one_with_the_same_function(paired_dataset, tmp_path):
    """init_weights with fewer groups: the trained groups are copied and each new group starts
    as the identity, so the deeper network computes what the trained one did, then learns."""
    from mirnet.archs import MIRNet
    from mirnet.training.loop import load_init_weights
    from mirnet.weights import WeightsError, arch_config, save_weights

    torch.manual_seed(5)
    shallow = mirnet.build_model("nano")
    start = save_weights(tmp_path / "nano.safetensors", shallow, "nano", arch_config("nano"))
    deeper_arch = {**arch_config("nano"), "num_groups": 3}
    deeper = MIRNet(**deeper_arch)
    load_init_weights(deeper, str(start), deeper_arch)
    image = torch.rand(1, 3, 24, 28)
    with torch.no_grad():
        assert torch.allclose(deeper.eval()(image), shallow.eval()(image), atol=1e-6)
    # The new groups' inner layers keep their seeded weights, to learn once the last conv moves.
    assert deeper.groups[2].body[0].attention[0][0].body[0].weight.abs().sum() > 0
    trainer = Trainer(
        _config(init_weights=str(start)), paired_dataset, tmp_path / "run", progress=False
    )  # the same configuration: plain fine-tuning
    assert torch.equal(trainer.model.conv_in.weight, shallow.conv_in.weight)
    wider_arch = {**arch_config("nano"), "features": 16}
    with pytest.raises(WeightsError, match="only the number of groups may grow"):
        load_init_weights(MIRNet(**wider_arch), str(start), wider_arch)


def test_resuming_a_finished_run_says_so(paired_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    train(_config(), paired_dataset, run, progress=False)
    before = torch.load(run / "last.pt", weights_only=True)["position"]
    capsys.readouterr()
    assert train(_config(), paired_dataset, run, resume=True, progress=False) == run / "model.safetensors"
    assert "already trained for 2 epochs; raise train.epochs" in capsys.readouterr().err
    assert torch.load(run / "last.pt", weights_only=True)["position"] == before  # no step taken
