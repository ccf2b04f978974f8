"""Zero-DCE with the authors' weights, scored beside the classical methods on ``mirnet evaluate``'s test sets.

    python benchmarks/zero_dce.py --data lol=../data/LOL --darkened FOLDER --out results/zero_dce

The weights come from the authors' repository at commit e0f4adc54d0f23348c4a9b84acc08fe8778d5bfd
(sha256 a4395acb874f320375d9704997cef874eaaaaa26a1777ceb29a92b70f74c3612); put them in
``../data/zero_dce/`` or pass ``--weights``.

Zero-DCE: C. Guo, C. Li, J. Guo, C. C. Loy, J. Hou, S. Kwong, R. Cong, "Zero-Reference Deep
Curve Estimation for Low-Light Image Enhancement", CVPR 2020. DCE-Net is seven 3x3 convolutions
of 32 channels (ReLU) with symmetric skip concatenations (conv5 sees conv3+conv4, conv6 sees
conv2+conv5, conv7 sees conv1+conv6); conv7 gives 24 channels through tanh: eight RGB curve
maps r_n, applied in turn as LE(x) = x + r_n * (x^2 - x). This is a re-implementation of
``Zero-DCE_code/model.py`` of https://github.com/Li-Chongyi/Zero-DCE, whose weights
(``Zero-DCE_code/snapshots/Epoch99.pth``, non-commercial use only) are kept outside this
repository and loaded as plain tensors (``weights_only=True``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from mirnet.classical import CLASSICAL_METHODS
from mirnet.data import find_pairs
from mirnet.evaluate import (
    darkened_set,
    evaluate_methods,
    markdown_table,
    paired_set,
    well_exposed_set,
    write_reports,
)
from mirnet.io import atomic_path

LABEL = "Zero-DCE (authors' weights)"


class DCENet(nn.Module):
    """DCE-Net: estimates eight curve maps and applies them to the (N, 3, H, W) image in [0, 1]."""

    def __init__(self, width: int = 32, iterations: int = 8):
        super().__init__()
        ins = [3, width, width, width, 2 * width, 2 * width, 2 * width]
        outs = [width] * 6 + [3 * iterations]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in zip(ins, outs))
        self.iterations = iterations

    def curves(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4, c5, c6, c7 = self.convs
        x1 = torch.relu(c1(x))
        x2 = torch.relu(c2(x1))
        x3 = torch.relu(c3(x2))
        x4 = torch.relu(c4(x3))
        x5 = torch.relu(c5(torch.cat([x3, x4], 1)))
        x6 = torch.relu(c6(torch.cat([x2, x5], 1)))
        return torch.tanh(c7(torch.cat([x1, x6], 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in torch.split(self.curves(x), 3, dim=1):
            x = x + r * (x * x - x)
        return x


def load_dce_net(path: str | Path) -> DCENet:
    """DCE-Net with the authors' weights: their ``e_conv{i}`` keys mapped onto ``convs.{i-1}``, strictly."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}  # in case of a DataParallel save
    mapped = {}
    for key, value in state.items():
        layer, _, param = key.partition(".")
        if not layer.startswith("e_conv"):
            raise KeyError(f"{path}: unexpected key {key}")
        mapped[f"convs.{int(layer.removeprefix('e_conv')) - 1}.{param}"] = value
    model = DCENet()
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights", default="../data/zero_dce/Epoch99.pth", help="Epoch99.pth of the authors"
    )
    parser.add_argument("--data", nargs="+", default=[], metavar="NAME=ROOT", help="paired sets (test split)")
    parser.add_argument("--darkened", nargs="+", metavar="FOLDER", help="clean photos, darkened")
    parser.add_argument("--well-exposed", nargs="+", metavar="FOLDER", help="photos as their own targets")
    parser.add_argument("--out", default="benchmarks/results/zero_dce")
    parser.add_argument("--limit", type=int, help="score only the first N images of each set")
    parser.add_argument("--no-classical", action="store_true", help="score Zero-DCE alone")
    args = parser.parse_args(argv)

    sets = []
    for given in args.data:
        name, _, root = given.rpartition("=")
        sets.append(paired_set(name or Path(root).name, find_pairs(root, "test"), f"{root} (test)"))
    if args.darkened:
        sets.append(darkened_set("darkened", args.darkened))
    if args.well_exposed:
        sets.append(well_exposed_set("well-exposed", args.well_exposed))
    if not sets:
        parser.error("nothing to score: give --data, --darkened or --well-exposed")
    model = load_dce_net(args.weights)
    print(f"loaded {args.weights} strictly ({sum(p.numel() for p in model.parameters())} parameters)")

    @torch.inference_mode()
    def zero_dce(image: torch.Tensor) -> torch.Tensor:
        return model(image[None].float())[0]

    out_dir, command = Path(args.out), " ".join(["python", *sys.argv])
    tables = []
    for test_set in sets:
        test_set.items = test_set.items[: args.limit] if args.limit else test_set.items
        methods = {} if args.no_classical else dict(CLASSICAL_METHODS)
        if test_set.kind == "well-exposed":  # as mirnet evaluate does: the input is the target
            methods.pop("dark input", None)
        methods[LABEL] = zero_dce
        start = time.perf_counter()
        rows, _ = evaluate_methods(test_set.items, methods, desc=test_set.name)
        meta = {"data": test_set.source, "set": test_set.name, "kind": test_set.kind, "command": command}
        meta.update(split="test", weights=str(args.weights), seconds=round(time.perf_counter() - start, 1))
        summary = write_reports(rows, out_dir / test_set.name, meta)
        title = f"{test_set.name}: {test_set.source}, {test_set.kind}, {len(test_set.items)} images"
        tables.append(markdown_table(summary, title))
        print(tables[-1], f"\n({meta['seconds']} s; reports in {out_dir / test_set.name}/)\n")
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(f"`{command}`\n\n" + "\n".join(tables))
    print(f"all tables in {out_dir / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
