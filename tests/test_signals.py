"""Interrupting ``mirnet train`` (issue 7): SIGTERM and SIGINT stop it cleanly with a resumable
checkpoint; SIGKILL (no handler can run) loses at most the steps since the last checkpoint, and
``--resume`` then ends with exactly the weights of a run that was never interrupted.

Each test runs the real command, ``python -m mirnet train``, as a subprocess on a tiny
synthetic dataset, with one thread so that runs are bit-for-bit reproducible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import make_pairs

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PAIRS, VALIDATION_PAIRS, BATCH, REPEAT, EPOCHS = 10, 2, 2, 4, 3
STEPS_PER_EPOCH = (TRAIN_PAIRS - VALIDATION_PAIRS) * REPEAT // BATCH  # 16
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS  # 48: a few seconds, so a signal lands mid-run
# Deterministic and fair to the other work on the machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("data"), "train", TRAIN_PAIRS)


def _config(folder: Path, checkpoint_every: int, max_steps: int | None = None, name: str = "") -> Path:
    """The smoke config (nano model, 32 px patches), longer and checkpointing as asked."""
    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config["data"].update(repeat=REPEAT, validation_pairs=VALIDATION_PAIRS)
    config["train"].update(
        epochs=EPOCHS, batch_size=BATCH, checkpoint_every=checkpoint_every, max_steps=max_steps
    )
    path = folder / f"smoke_every_{checkpoint_every}{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(config: Path, data: Path, run: Path, *extra: str) -> subprocess.Popen:
    # Output to files, not pipes: nobody reads a pipe while the run goes on, and a full one
    # would stall the training process.
    log = open(run.parent / f"{run.name}{''.join(extra)}.log", "w")
    command = [sys.executable, "-m", "mirnet", "train", "--config", str(config), "--data", str(data)]
    process = subprocess.Popen(
        [*command, "--out", str(run), *extra], stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=run.parent
    )
    process.log_path = Path(log.name)
    log.close()
    return process


def _position(run: Path) -> dict | None:
    try:
        return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["position"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


def _wait_for_step(process: subprocess.Popen, run: Path, step: int, timeout: float = 120) -> int:
    """Wait until last.pt records at least ``step`` steps; returns the step it records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        position = _position(run)
        if position and position["global_step"] >= step:
            return position["global_step"]
        if process.poll() is not None:
            pytest.fail(f"training ended (status {process.returncode}) before step {step}:\n{_log(process)}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no checkpoint of step {step} within {timeout} s:\n{_log(process)}")


def _log(process: subprocess.Popen) -> str:
    return process.log_path.read_text()[-3000:]


def _finish(process: subprocess.Popen, timeout: float = 180) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_sigterm_and_sigint_stop_with_a_resumable_checkpoint(tmp_path, data):
    # Checkpoints every 4 steps, and a signal right after the first: the run is mid-epoch and
    # far from its end. One run per signal, side by side.
    config = _config(tmp_path, checkpoint_every=4)
    runs = {sig: tmp_path / sig.name for sig in (signal.SIGTERM, signal.SIGINT)}
    processes = {sig: _start(config, data, run) for sig, run in runs.items()}
    for sig, process in processes.items():
        _wait_for_step(process, runs[sig], 4)
        process.send_signal(sig)
    for sig, process in processes.items():
        status, log, run = _finish(process), _log(process), runs[sig]
        assert status == 128 + int(sig), log  # 143 for SIGTERM, 130 for SIGINT
        # The message follows the handler's checkpoint in the loop: last.pt is the stopping step's.
        assert f"stopped by signal {int(sig)}; resume with --resume" in log and "Traceback" not in log
        position = _position(run)
        assert 4 <= position["global_step"] < TOTAL_STEPS and position["step_in_epoch"] > 0, position
        assert not (run / "model.safetensors").exists()  # stopped, not finished
        assert not list(run.glob(".*.tmp"))  # the handler let every write complete

    # Each resumes where it stopped: two more steps here (max_steps), to keep the test short.
    stopped_at = {sig: _position(run)["global_step"] for sig, run in runs.items()}
    resumes = {
        sig: _start(_config(tmp_path, 4, max_steps=stopped_at[sig] + 2, name=sig.name), data, run, "--resume")
        for sig, run in runs.items()
    }
    for sig, process in resumes.items():
        assert _finish(process) == 0, _log(process)
        assert (runs[sig] / "model.safetensors").is_file()
        assert _position(runs[sig])["global_step"] == stopped_at[sig] + 2


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, data):
    config = _config(tmp_path, checkpoint_every=1)
    straight_run, killed_run = tmp_path / "straight", tmp_path / "killed"
    # Both at once: one thread each, and the same results as one after the other.
    straight = _start(config, data, straight_run)
    killed = _start(config, data, killed_run)
    kill_after = STEPS_PER_EPOCH + STEPS_PER_EPOCH // 4  # mid-epoch 2, after an epoch end's files
    _wait_for_step(killed, killed_run, kill_after)
    killed.kill()  # SIGKILL: no handler, no last checkpoint
    assert _finish(killed) == -signal.SIGKILL
    position = _position(killed_run)  # written atomically: whole even though the kill was abrupt
    assert kill_after <= position["global_step"] < TOTAL_STEPS, position
    assert not (killed_run / "model.safetensors").exists()

    resume = _start(config, data, killed_run, "--resume")
    assert _finish(resume) == 0, _log(resume)
    assert _finish(straight) == 0, _log(straight)

    expected = load_file(straight_run / "model.safetensors")
    actual = load_file(killed_run / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    last = [torch.load(run / "last.pt", weights_only=True) for run in (straight_run, killed_run)]
    assert last[0]["position"] == last[1]["position"] and last[1]["position"]["global_step"] == TOTAL_STEPS
    for key, value in last[0]["model"].items():
        assert torch.equal(value, last[1]["model"][key]), key
    assert len((killed_run / "log.csv").read_text().splitlines()) == 1 + EPOCHS  # no epoch lost or repeated
