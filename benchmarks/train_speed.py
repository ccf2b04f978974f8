"""Seconds per training step on the CPU: fp32 eager against bf16 autocast and torch.compile.

    python benchmarks/train_speed.py                                # tiny and small, all variants
    python benchmarks/train_speed.py --models tiny --steps 5 --converge-steps 20
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/train_speed.py   # beside training runs: 1 thread

A step is what ``Trainer._step`` and ``optimizer_step`` (src/mirnet/training/loop.py) do:
forward (under bf16 autocast for the bf16 variants) of a channels-last batch, the fp32
``EnhancementLoss(1.0, 0.3)`` of the output, backward and an Adam step (lr 2e-4), on batches
of 4 patches of 192x192 (configs/general_tiny.yaml). Variants: eager-fp32 (the trainer's
default, the baseline), eager-bf16, compile-fp32 and compile-bf16 (``torch.compile`` of the
model, default mode; the optimizer stays eager). Inductor's caches are disabled, so the
compile time reported (the first step's time less the variant's median step) is a cold one:
minutes per variant on one thread, so ``--compile-models`` can limit compiling to some models.

Every variant trains the same seeded initial weights on the same fixed synthetic batches
(smooth random photos darkened with ``mirnet.data.synthetic.darken``) for
``max(--converge-steps, warm-up + --steps)`` steps, in this one process, one step of each
variant in turn (so that a change in the machine's other load slows all alike). The time is the
median over ``--steps`` steps after 2 warm-up steps, given as a speed-up over eager-fp32
(fp32 s/step / variant s/step); the final loss (mean of the last 5 of the first
``--converge-steps`` steps) is given as a ratio to eager-fp32's, to show whether a faster
variant still learns as well. ``--threads`` defaults to 1, because the benchmark is meant to
run beside training runs on a shared machine. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16"]
BASELINE = VARIANTS[0]
WARMUP = 2
BATCH, PATCH, DISTINCT_BATCHES, LAST = 4, 192, 8, 5


def fixed_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(dark, bright) float batches in [0, 1]: smooth random photos and their darkened copies."""
    from mirnet.data.synthetic import darken

    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(DISTINCT_BATCHES):
        coarse = torch.rand(BATCH, 3, 12, 12, generator=generator)
        bright = (F.interpolate(coarse, size=(PATCH, PATCH), mode="bicubic").clamp(0, 1) * 255).round()
        bright = bright.to(torch.uint8)
        dark = torch.stack([darken(image, rng, mode="dark") for image in bright])
        batches.append((dark.float() / 255, bright.float() / 255))
    return batches


def trainer(model_name: str, variant: str):
    """A fresh seeded model, its Adam and loss; returns ``step(low, high) -> (seconds, loss)``."""
    from mirnet.archs import MIRNet
    from mirnet.losses import EnhancementLoss
    from mirnet.training.loop import optimizer_step
    from mirnet.weights import arch_config

    torch.manual_seed(0)
    model = MIRNet(**arch_config(model_name)).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.999), weight_decay=0.0)
    loss_fn = EnhancementLoss(1.0, 0.3)
    runner, precision = variant.split("-")
    net = torch.compile(model) if runner == "compile" else model
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step(low: torch.Tensor, high: torch.Tensor) -> tuple[float, float]:
        start = time.perf_counter()
        low = low.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = net(low)
        loss = loss_fn(out.float(), high)
        value = float(loss.detach())
        optimizer_step(loss, optimizer, None, 0.0)
        return time.perf_counter() - start, value

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument(
        "--compile-models",
        nargs="+",
        help="compile variants only for these (default: all; cold compiles take minutes)",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps after warm-up (default 10)")
    parser.add_argument(
        "--converge-steps", type=int, default=30, help="steps for the final loss (default 30)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "train-speed-cpu.json")
    args = parser.parse_args()
    if args.converge_steps < LAST:
        parser.error(f"--converge-steps must be at least {LAST}")

    torch.set_num_threads(args.threads)
    from torch._inductor import config as inductor_config

    inductor_config.force_disable_caches = True  # a cold compile, as a first training run pays
    torch._dynamo.config.cache_size_limit = 64  # several compiled instances of one class
    variants = [BASELINE, *(v for v in args.variants if v != BASELINE)]
    total = max(args.converge_steps, WARMUP + args.steps)
    batches = fixed_batches()
    rows = []
    for model_name in args.models:
        names = [v for v in variants if model_name in (args.compile_models or args.models) or "eager" in v]
        rows += [{"model": model_name, "variant": v, "step_seconds": [], "losses": []} for v in names]
        runs = {row["variant"]: row for row in rows[-len(names) :]}
        steps = {v: trainer(model_name, v) for v in names}
        # Round robin, one step of each variant in turn: a change in the machine's other load
        # (the training runs beside it) then slows every variant alike.
        for i in range(total):
            for variant, step in list(steps.items()):
                run = runs[variant]
                try:
                    seconds, loss = step(*batches[i % len(batches)])
                except Exception as error:  # a variant that fails (compile, say) is recorded
                    run["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
                    print(f"  {model_name} {variant} failed: {run['error']}", file=sys.stderr)
                    del steps[variant]
                    continue
                run["step_seconds"].append(seconds)
                run["losses"].append(loss)
                print(f"  {model_name} {variant} step {i}: {seconds:.2f} s, loss {loss:.4f}", file=sys.stderr)
        base = runs[BASELINE]
        for variant, run in runs.items():
            if "error" in run:
                continue
            run["seconds"] = float(np.median(run["step_seconds"][WARMUP : WARMUP + args.steps]))
            run["final_loss"] = float(
                np.mean(run["losses"][args.converge_steps - LAST : args.converge_steps])
            )
            run["first_step_s"] = run["step_seconds"][0]
            if variant.startswith("compile"):  # its first step compiles forward and backward
                run["compile_s"] = run["first_step_s"] - run["seconds"]
            if "error" not in base:
                run["speedup"] = base["seconds"] / run["seconds"]
                run["loss_ratio"] = run["final_loss"] / base["final_loss"]

    meta = {
        "device": f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": BATCH,
        "patch": PATCH,
        "warmup_steps": WARMUP,
        "timed_steps": args.steps,
        "converge_steps": args.converge_steps,
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
    }
    print(table(rows, meta))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.json}", file=sys.stderr)


def table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"{meta['device']}, {meta['threads']} thread(s) (the machine is shared with training runs), "
        f"torch {meta['torch']}; batch {meta['batch']} x {meta['patch']}x{meta['patch']}, median of "
        f"{meta['timed_steps']} steps after {meta['warmup_steps']} warm-up; final loss = mean of the last "
        f"{LAST} of {meta['converge_steps']} steps. Command: `{meta['command']}`",
        "",
        "| model | variant | s / step | speed-up vs fp32 | final loss | loss / fp32's | compile s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | failed: {r['error'][:80]} | | | | |")
            continue
        compile_s = f"{r['compile_s']:.0f}" if "compile_s" in r else ""
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['seconds']:.3f} | {r.get('speedup', float('nan')):.2f}x "
            f"| {r['final_loss']:.4f} | {r.get('loss_ratio', float('nan')):.3f} | {compile_s} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
