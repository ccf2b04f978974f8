"""Ship a training run's weights inside the package, with its model card.

    python scripts/ship_model.py experiments/general_tiny tiny \
        --evaluation experiments/general_tiny/evaluation --label "MIRNet tiny (general_tiny)"

copies RUN/model.safetensors to src/mirnet/weights/NAME.safetensors and RUN/model.json to
NAME.json, adding the test results that ``mirnet evaluate`` wrote (each set's
``results.json`` under ``--evaluation``), so that ``mirnet enhance --model NAME`` finds the
weights and a reader finds, next to them, how they were trained, chosen and scored.

``--self-ensemble N`` ships the weights as a model that averages N flipped copies of each
photo (stored in the file; the bundled ``quality`` model), with the validation scores of
``benchmarks/self_ensemble.py --json`` that chose N (``--self-ensemble-json``) in the card:

    python scripts/ship_model.py experiments/general_tiny_wide quality --self-ensemble 8 \
        --self-ensemble-json benchmarks/results/self-ensemble-cpu.json \
        --evaluation experiments/general_tiny_wide/evaluation_x8 --label "MIRNet quality x8"
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from mirnet.weights import load_weights, save_weights

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "mirnet" / "weights"


def test_results(evaluation: Path, label: str) -> dict[str, dict[str, float]]:
    """The model's mean scores on every test set evaluated under ``evaluation``."""
    results = {}
    for path in sorted(evaluation.glob("*/results.json")) or sorted(evaluation.glob("results.json")):
        report = json.loads(path.read_text())
        if label not in report["mean"]:
            raise SystemExit(f"{path}: no method named {label!r}; have {', '.join(report['mean'])}")
        mean = report["mean"][label]
        results[report["meta"].get("set", path.parent.name)] = {
            "kind": report["meta"].get("kind", "paired"),
            "data": report["meta"]["data"],
            "images": mean["images"],
            "psnr": round(mean["psnr"], 3),
            "ssim": round(mean["ssim"], 4),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training run folder (with model.safetensors, model.json)")
    parser.add_argument("name", help="the bundled name, e.g. tiny")
    parser.add_argument("--evaluation", type=Path, help="a mirnet evaluate --out folder of these weights")
    parser.add_argument("--label", help="the model's method name in those reports (e.g. 'MIRNet tiny')")
    parser.add_argument("--self-ensemble", type=int, choices=[2, 4, 8], help="copies averaged per photo")
    parser.add_argument("--self-ensemble-json", type=Path, help="benchmarks/self_ensemble.py's --json")
    args = parser.parse_args()
    card = json.loads((args.run / "model.json").read_text())
    card["bundled_as"] = args.name
    card["run"] = str(args.run)
    if args.evaluation:
        card["test"] = test_results(args.evaluation, args.label or f"MIRNet {card['name']}")
    target = WEIGHTS / f"{args.name}.safetensors"
    if args.self_ensemble:
        if not args.self_ensemble_json:
            raise SystemExit("--self-ensemble needs --self-ensemble-json: the validation that chose it")
        rows = json.loads(args.self_ensemble_json.read_text())["rows"]
        if not any(row["copies"] == args.self_ensemble for row in rows):
            raise SystemExit(f"{args.self_ensemble_json}: no row for {args.self_ensemble} copies")
        card["self_ensemble"] = {
            "copies": args.self_ensemble,
            "validation": rows,  # one row per number of copies measured, the shipped one among them
            "measured_by": str(args.self_ensemble_json),
        }
        model, info = load_weights(args.run / "model.safetensors")
        # Named as bundled, so that reports label it "MIRNet quality x8", not as its network.
        save_weights(target, model, args.name, info["arch"], self_ensemble=args.self_ensemble)
    else:
        shutil.copyfile(args.run / "model.safetensors", target)
    (WEIGHTS / f"{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"shipped {args.run} as {args.name}: {WEIGHTS / args.name}.safetensors and .json")


if __name__ == "__main__":
    main()
