"""The eager model's rewritten layers against their plain formulas, in one process.

    python benchmarks/eager_blocks.py                 # tiny, 600x400, default path and fp32
    python benchmarks/eager_blocks.py --rounds 9 --json benchmarks/results/eager-blocks-cpu.json

Parts of ``mirnet.archs.mirnet_arch`` compute their paper formulas in a faster way
(same values, tested in tests/test_archs.py and tests/test_fast_ops.py): ``BlurPool`` without
a reflect-padded copy of its input; ``SpatialAttention`` with the channel mean as a 1x1
convolution, the channel max as a tree of element-wise maxima of channel halves, and the gate
expanded before the product; and, for inference in channels-last layout
(``mirnet.archs.fast_ops``), bilinear up-sampling by lerps, global average pooling in bf16 as
a product with ones, and the dual attention unit's fusion in two halves instead of over a
concatenation. This script puts the plain formulas
back on the same model (reflect pad then strided blur; ``amax`` and ``mean`` over channels
and a broadcast product; ``fast_ops.plain_ops()``) and times both
versions of the whole network, alternating one photo each for ``--rounds`` rounds, so
that a change in the machine's load slows both alike. Reported per path: median seconds of
each, the speed-up of the rewritten layers, and the PSNR between their outputs. Paths: the
default (channels-last, bf16 autocast where the CPU has it) and plain fp32 (NCHW), the
baseline of benchmarks/speed.py. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from mirnet.archs import fast_ops
from mirnet.archs.mirnet_arch import BlurPool, SpatialAttention
from mirnet.device import supports_bf16
from mirnet.io import read_image
from mirnet.metrics import psnr
from mirnet.weights import bundled_models, load_weights

ROOT = Path(__file__).resolve().parents[1]


def plain_blur(self: BlurPool, x: torch.Tensor) -> torch.Tensor:
    """The blur-pool as written in the paper's reference (Zhang, 2019): pad, then blur."""
    return self._blur(F.pad(x, (1, 1, 1, 1), mode="reflect"))


def plain_spatial_attention(self: SpatialAttention, x: torch.Tensor) -> torch.Tensor:
    """Channel max and mean, a 5x5 conv, a sigmoid, and a broadcast product."""
    pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
    return x * torch.sigmoid(self.conv(pooled))


def use_plain_layers(model: torch.nn.Module, plain: bool) -> None:
    """Give every BlurPool and SpatialAttention of ``model`` the plain formula (or its own)."""
    for module in model.modules():
        for kind, formula in ((BlurPool, plain_blur), (SpatialAttention, plain_spatial_attention)):
            if isinstance(module, kind):
                if plain:
                    module.forward = types.MethodType(formula, module)
                else:
                    module.__dict__.pop("forward", None)


def timed(
    net: torch.nn.Module, batch: torch.Tensor, autocast: bool, plain: bool
) -> tuple[float, torch.Tensor]:
    """Seconds for one photo through ``net`` with the plain or the rewritten layers, and the output."""
    use_plain_layers(net, plain)
    ops = fast_ops.plain_ops() if plain else contextlib.nullcontext()
    start = time.perf_counter()
    with ops, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = net(batch)
    return time.perf_counter() - start, out.float()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="a bundled model (default tiny)")
    parser.add_argument("--image", default=str(ROOT / "samples" / "coffee_dark.png"), help="a 600x400 photo")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    model, _ = load_weights(bundled_models()[args.model])
    model.eval()
    image = read_image(args.image)[None]
    bf16 = supports_bf16(torch.device("cpu"))
    paths = {
        f"default (channels-last, {'bf16' if bf16 else 'fp32'})": (torch.channels_last, bf16),
        "plain fp32 (NCHW)": (torch.contiguous_format, False),
    }
    rows = []
    for label, (layout, autocast) in paths.items():
        net = model.to(memory_format=layout)
        batch = image.contiguous(memory_format=layout)

        timed(net, batch, autocast, True), timed(net, batch, autocast, False)  # warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        outputs = {}
        for _ in range(args.rounds):
            for plain in (True, False):
                seconds, outputs[plain] = timed(net, batch, autocast, plain)
                times[plain].append(seconds)
        plain_s, rewritten_s = statistics.median(times[True]), statistics.median(times[False])
        rows.append(
            {
                "path": label,
                "plain_s": plain_s,
                "rewritten_s": rewritten_s,
                "speedup": plain_s / rewritten_s,
                "psnr_db": psnr(outputs[True].clamp(0, 1), outputs[False].clamp(0, 1)),
            }
        )
    use_plain_layers(model, False)
    meta = {
        "model": args.model,
        "image": Path(args.image).name,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(f"{args.model}, {Path(args.image).name}, {args.rounds} rounds, {meta['threads']} threads\n")
    print("| path | plain layers s | rewritten layers s | speed-up | PSNR between them (dB) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['path']} | {row['plain_s']:.3f} | {row['rewritten_s']:.3f} | "
            f"{row['speedup']:.2f}x | {row['psnr_db']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
