"""A geometric self-ensemble on a run's held-out validation: the model's output averaged over
flipped (x4) and also transposed (x8) copies of each input, against the plain output (x1).

    python benchmarks/self_ensemble.py experiments/general_tiny_wide --weights tiny \
        --json benchmarks/results/self-ensemble-cpu.json

Scores the validation images the run held out (its config and split.json, as ``mirnet
train`` validates them: whole images, bf16 autocast where the CPU has it), so that whether a
self-ensemble is worth its cost can be decided on validation, never on a test set. Run from
the repository root after laying out the run's data (README, Data). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mirnet.inference import average_over_flips


class SelfEnsemble(torch.nn.Module):
    """``net`` averaged over the first ``copies`` of the 8 flips and transposes of its input
    (:func:`mirnet.inference.average_over_flips`, which ``mirnet enhance --self-ensemble``
    runs too, there on outputs clamped to [0, 1] one by one)."""

    def __init__(self, net: torch.nn.Module, copies: int):
        super().__init__()
        self.net, self.copies = net, copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return average_over_flips(self.net, x, self.copies)


def main() -> int:
    from mirnet.device import supports_bf16
    from mirnet.inference import load_model
    from mirnet.training import load_config
    from mirnet.training.datasets import training_data
    from mirnet.training.validation import validate_sets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training run folder (config.yaml and split.json)")
    parser.add_argument("--weights", default="tiny", help="a bundled model name or a weights file")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 8], choices=[1, 2, 4, 8])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    config = load_config(args.run / "config.yaml")
    split = json.loads((args.run / "split.json").read_text())
    validation = training_data(config, None, False, split).validation
    net = load_model(args.weights, precision="fp32").model  # autocast below, as training validates
    dtype = torch.bfloat16 if supports_bf16("cpu") else None
    results = {"run": str(args.run), "weights": str(args.weights), "dtype": str(dtype), "rows": []}
    for copies in args.copies:
        scores, per_source = validate_sets(SelfEnsemble(net, copies), validation, torch.device("cpu"), dtype)
        row = {
            "copies": copies,
            "psnr": round(scores["psnr"], 4),
            "ssim": round(scores["ssim"], 5),
            **per_source,
        }
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
