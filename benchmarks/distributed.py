"""Seconds per training step under torchrun, against one plain process measured in the same run.

    python benchmarks/distributed.py                                   # smoke config, 1 and 2 processes
    python benchmarks/distributed.py --config configs/paper.yaml --nproc 1 --steps 20   # one GPU
    python benchmarks/distributed.py --config configs/smoke.yaml configs/paper.yaml --nproc 1 2 4 8

For each configuration it trains a baseline, one plain ``mirnet train`` process, then the
same configuration under ``torchrun --nproc_per_node N -m mirnet train`` for each N (N = 1
included: it shows what the launcher and DistributedDataParallel cost). Every run is 2 epochs
of ``--steps`` steps (more if one pass over ``--data`` takes more). The number reported is
epoch 2's ``seconds_per_step`` from the run's log.csv: epoch 1 pays for warm-up (cuDNN
autotuning, the allocator, first-call costs). A run that fails (out of memory, say) is
recorded as such and the others go on.

The per-process batch stays the configuration's, so N processes train on N times the samples
per step: that is how more GPUs are used for throughput (see docs/distributed.md). The table
gives samples per second and the speed-up over the baseline in samples per second.

Without ``--data`` it trains on synthetic 600x400 pairs (the time of a step does not depend on
what the pictures show). On a CPU, each of the N processes gets cores / N threads, so all the
runs use the whole machine. Writes JSON to benchmarks/results/distributed-{cpu,cuda}.json.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from mirnet.data import find_pairs
from mirnet.training import load_config

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PAIRS = 8
VALIDATION_PAIRS = 1  # validation is not timed, but it runs: keep it short


def synthetic_pairs(root: Path, count: int, size: tuple[int, int] = (400, 600)) -> Path:
    """Write ``count`` random low/normal-light pairs in the layout ``mirnet train`` reads."""
    rng = np.random.default_rng(0)
    for name in ("low", "high"):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        high = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(high).save(root / "train" / "high" / f"{i}.png")
        Image.fromarray(high // 8).save(root / "train" / "low" / f"{i}.png")
    return root


def run_config(base: dict[str, Any], out: Path, train_pairs: int, processes: int, steps: int) -> Path:
    """Write ``base`` shortened to 2 epochs of ``steps`` steps on ``processes`` (more when one
    pass over the ``train_pairs`` takes more) to ``out``."""
    config = copy.deepcopy(base)
    batch = config["train"]["batch_size"]
    # An epoch is train_pairs * repeat samples, in steps of batch * processes.
    repeat = math.ceil(steps * batch * processes / train_pairs)
    config["data"].update(repeat=repeat, validation_pairs=VALIDATION_PAIRS)
    config["train"].update(epochs=2, max_steps=None, checkpoint_every=10**9, init_weights=None)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


class RunFailed(Exception):
    """A training run that did not finish; the benchmark records why and goes on."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_once(config: Path, data: Path, out: Path, processes: int | None) -> float:
    """Train; returns epoch 2's seconds per step. ``processes=None``: plain ``mirnet train``."""
    threads = max(1, (os.cpu_count() or 1) // (processes or 1))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = ["train", "--config", str(config), "--data", str(data), "--out", str(out)]
    if processes is None:
        command = [sys.executable, "-m", "mirnet", *args]
    else:
        # --standalone would pick its own port; an explicit free one keeps runs from colliding.
        launch = ["--nnodes", "1", "--nproc_per_node", str(processes), "--rdzv_backend", "c10d"]
        launch += ["--rdzv_endpoint", f"127.0.0.1:{free_port()}"]
        command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "mirnet", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        killed = result.returncode in (-9, 137) or "SIGKILL" in output
        print(f"{' '.join(command)} failed:\n{output[-3000:]}", file=sys.stderr)
        raise RunFailed("killed (out of memory?)" if killed else f"exit status {result.returncode}")
    with open(out / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["seconds_per_step"])


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "configs" / "smoke.yaml"])
    parser.add_argument("--nproc", nargs="+", type=int, default=[1, 2], help="process counts to time")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (default 20)")
    parser.add_argument("--data", type=Path, default=None, help="paired dataset (default: synthetic)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if cuda and max(args.nproc) > torch.cuda.device_count():
        parser.error(f"--nproc {max(args.nproc)} but only {torch.cuda.device_count()} GPU(s)")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data or synthetic_pairs(work / "data", TRAIN_PAIRS + VALIDATION_PAIRS)
        train_pairs = len(find_pairs(data, "train")) - VALIDATION_PAIRS
        for path in args.config:
            base = load_config(path).to_dict()
            name, batch = base["name"], base["train"]["batch_size"]
            baseline = None
            for processes in [None, *args.nproc]:
                count = processes or 1
                label = "plain" if processes is None else f"torchrun x{processes}"
                config = run_config(base, work / f"{name}-{label}.yaml", train_pairs, count, args.steps)
                print(f"{name}: {label} ...", file=sys.stderr, flush=True)
                row = {"config": name, "launch": label, "processes": count, "batch_per_process": batch}
                row["effective_batch"] = batch * count
                results.append(row)
                try:
                    seconds = train_once(config, data, work / f"{name}-{label.replace(' ', '')}", processes)
                except RunFailed as error:
                    row["failed"] = str(error)
                    continue
                samples_per_second = batch * count / seconds
                if processes is None:
                    baseline = samples_per_second
                row["seconds_per_step"] = seconds
                row["samples_per_second"] = round(samples_per_second, 3)
                if baseline:  # none when the plain run failed
                    row["speedup_vs_plain"] = round(samples_per_second / baseline, 2)

    print(f"\n{device_name()}, torch {torch.__version__}, {args.steps} steps an epoch, epoch 2 timed\n")
    print("| config | launch | effective batch | s/step | samples/s | vs plain |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        if "failed" in r:
            print(f"| {r['config']} | {r['launch']} | {r['effective_batch']} | {r['failed']} | | |")
            continue
        print(
            f"| {r['config']} | {r['launch']} | {r['effective_batch']} | {r['seconds_per_step']:.4f} "
            f"| {r['samples_per_second']:.2f} | {r.get('speedup_vs_plain', '-')}x |"
        )
    out = args.json or ROOT / "benchmarks" / "results" / f"distributed-{'cuda' if cuda else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])
    meta = {"device": device_name(), "torch": torch.__version__, "steps_per_epoch": args.steps}
    out.write_text(json.dumps({**meta, "command": command, "results": results}, indent=2) + "\n")
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
