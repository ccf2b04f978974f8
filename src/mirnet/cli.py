"""The ``mirnet`` command: a thin layer over functions that can be imported."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback
import warnings
from pathlib import Path

import mirnet
from mirnet.inference import PRECISIONS
from mirnet.options import integer, number
from mirnet.serve import add_serve_parser
from mirnet.video import DEFAULT_QUALITY, DEFAULT_SMOOTHING
from mirnet.weights import SELF_ENSEMBLE_COPIES


def _train(args: argparse.Namespace) -> int:
    from mirnet.training import ConfigError, TrainingDiverged, TrainingStopped, load_config, train

    config = load_config(args.config)
    if args.data is None and not config.data.sources:
        raise ConfigError(f"{args.config}: give --data, or list data.sources in the config")
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    try:
        weights = train(
            config, args.data, out, resume=args.resume, command=" ".join(["mirnet", *sys.argv[1:]])
        )
    except TrainingDiverged as err:
        print(f"mirnet train: {err}", file=sys.stderr)
        return 1
    except TrainingStopped as err:
        return 128 + err.signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    if int(os.environ.get("RANK", "0")) == 0:  # one line from torchrun, not one per process
        print(f"weights: {weights}")
    return 0


# Packages of the optional extras (pyproject.toml), for a helpful error when one is missing.
OPTIONAL_PACKAGES = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "av": "video",
}


def _report(command: str, path, message: str) -> None:
    print(f"mirnet {command}: error: {path}: {message}", file=sys.stderr)


# A folder at least this long, run eagerly with no compiled package, gets a one-line tip.
PACKAGE_TIP_PHOTOS = 100


def _package_tip(args: argparse.Namespace, enhancer, count: int) -> None:
    """Tell a user running a long folder eagerly that a compiled package would be faster."""
    if args.compile is not None or enhancer.backend != "torch" or enhancer.compiled or enhancer.package:
        return  # compiled already, or eager on purpose (--no-compile), or not PyTorch
    command = "mirnet export --format aoti"
    if args.weights or args.model:
        command += f" --weights {shlex.quote(args.weights)}" if args.weights else f" --model {args.model}"
    command += f" --precision {enhancer.precision} --device {enhancer.device}"
    print(
        f"mirnet enhance: tip: for {count} inputs, `{command}` compiles the model for this machine once "
        "(a few minutes), and every later run uses it: faster than the eager model (README, Speed)",
        file=sys.stderr,
    )


def _enhance(args: argparse.Namespace) -> int:
    import torch
    from PIL.Image import DecompressionBombWarning

    from mirnet.enhance import collect_inputs, enhance_files, enhance_videos, plan_outputs
    from mirnet.inference import load_model
    from mirnet.video import is_video_path

    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file in the way, a read-only disk: nothing could be written
            _report("enhance", out_dir, f"cannot create the output folder ({err.strerror or err})")
            return 1
    # Under torchrun every process lists the same inputs and takes every WORLD_SIZE-th one
    # from its RANK: no file is written twice, and no process group is needed.
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    inputs, failures = collect_inputs(args.inputs)
    plan, refused = plan_outputs(inputs, out_dir)
    failures += refused
    if rank == 0:  # reported once, not once per process
        for failure in failures:
            _report("enhance", failure.input, failure.error)
    skipped = 0
    if args.skip_existing:
        skipped = sum(1 for _, target in plan if target.exists())
        plan = [(source, target) for source, target in plan if not target.exists()]
    if not plan:  # nothing readable to do: no need to load a model
        if not args.quiet:
            print(f"enhanced 0 images{f'; {skipped} already done' if skipped else ''}", file=sys.stderr)
        return 1 if failures or not skipped else 0
    inputs_to_do = len(plan)  # by all processes together
    plan = plan[rank::world_size]
    if not plan:  # more processes than files
        return 0
    device = args.device
    if world_size > 1 and device == "auto" and torch.cuda.is_available():
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"  # one GPU per process
    enhancer = load_model(
        args.weights or args.model,
        device=device,
        precision=args.precision,
        tile=args.tile,
        backend=args.backend,
        compile=args.compile,
        fast=args.fast,
        self_ensemble=args.self_ensemble,
    )

    if rank == 0 and not args.quiet and inputs_to_do >= PACKAGE_TIP_PHOTOS:
        _package_tip(args, enhancer, inputs_to_do)

    def show(outcome) -> None:
        if outcome.error:
            _report("enhance", outcome.input, outcome.error)
        elif args.verbose:
            print(f"{outcome.input} -> {outcome.output}", file=sys.stderr)

    # 0 (or less) lifts the limit; otherwise photos above it fail before being decoded.
    max_pixels = round(args.max_megapixels * 1e6) if args.max_megapixels > 0 else None
    # --max-megapixels is the limit here: Pillow's "could be a decompression bomb" warning
    # would only add a two-line aside to the one-line error, or warn about an accepted photo.
    warnings.filterwarnings("ignore", category=DecompressionBombWarning)
    photos = [pair for pair in plan if not is_video_path(pair[0])]
    videos = [pair for pair in plan if is_video_path(pair[0])]
    progress = not args.quiet and rank == 0  # one bar, not one per process
    outcomes = enhance_files(
        photos, enhancer, bits=args.bits, progress=progress, on_outcome=show, max_pixels=max_pixels
    )
    smoothing = 0.0 if args.frame_by_frame else DEFAULT_SMOOTHING
    outcomes += enhance_videos(
        videos, enhancer, args.video_quality, smoothing, progress=progress, on_outcome=show
    )
    failed = (len(failures) if rank == 0 else 0) + sum(1 for o in outcomes if o.error)
    done = sum(1 for o in outcomes if o.output)
    done_videos = sum(1 for o in outcomes if o.output and is_video_path(o.input))
    if not args.quiet:
        where = f"into {out_dir}" if out_dir is not None else "beside the inputs"
        print(
            (f"process {rank} of {world_size}: " if world_size > 1 else "")
            + f"enhanced {done - done_videos} image(s)"
            + (f" and {done_videos} video(s)" if videos else "")
            + f", written {where}"
            + (f"; {skipped} already done" if skipped else "")
            + (f"; {failed} failed" if failed else ""),
            file=sys.stderr,
        )
    return 1 if failed else 0


def _test_sets(args: argparse.Namespace) -> list:
    """The test sets the evaluate options name, each checked before any model is loaded."""
    from mirnet.data import find_pairs, resolve_pair_folders
    from mirnet.device import OptionError
    from mirnet.evaluate import darkened_set, paired_set, well_exposed_set

    split = "test" if args.split == "eval" else args.split
    sets = []
    for given in args.data or []:
        name, _, root = given.rpartition("=")
        name = name or Path(root).name
        pairs = find_pairs(root, split)
        # ROOT/{low,high}/ directly (no split folders) serves every split, training included.
        if split != "train" and resolve_pair_folders(root, split)[0].parent == Path(root):
            print(
                f"mirnet evaluate: warning: {root} has no train/test split, so its pairs serve "
                "as both: a model trained on this folder is being scored on its own training pairs",
                file=sys.stderr,
            )
        sets.append(paired_set(name, pairs, f"{root} ({split})"))
    if args.darkened:
        sets.append(darkened_set("darkened", args.darkened))
    if args.well_exposed:
        sets.append(well_exposed_set("well-exposed", args.well_exposed))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise OptionError(f"--data: test sets need different names, got {names}; use NAME=ROOT")
    for test_set in sets:
        test_set.items = test_set.items[: args.limit] if args.limit else test_set.items
    return sets


def _evaluate(args: argparse.Namespace) -> int:
    from mirnet.classical import CLASSICAL_METHODS
    from mirnet.device import OptionError
    from mirnet.evaluate import comparison_figure, evaluate_methods, markdown_table, write_reports
    from mirnet.inference import load_model
    from mirnet.io import atomic_path

    if not (args.data or args.well_exposed or args.darkened):
        raise OptionError("nothing to score: give --data, --darkened or --well-exposed")
    sets = _test_sets(args)
    classical = {} if args.no_classical else dict(CLASSICAL_METHODS)
    models, model_meta = {}, []
    if not args.classical_only:
        chosen = args.weights or args.model or [None]
        for choice in chosen:
            # Eager: scores must not depend on what this machine has compiled.
            enhancer = load_model(
                choice,
                device=args.device,
                precision=args.precision,
                compile=False,
                self_ensemble=args.self_ensemble,
            )
            label = f"MIRNet {enhancer.info['name']}"
            if enhancer.self_ensemble > 1:
                label += f" x{enhancer.self_ensemble}"
            if len(chosen) > 1:
                label += f" ({Path(choice).parent.name if args.weights else choice})"
            models[label] = enhancer.enhance_tensor
            model_meta.append(
                {
                    "label": label,
                    "weights": enhancer.info["weights"],
                    "arch": enhancer.info["arch"],
                    "self_ensemble": enhancer.self_ensemble,
                }
            )
    if not classical and not models:
        print(
            "mirnet evaluate: error: nothing to evaluate (--no-classical with --classical-only)",
            file=sys.stderr,
        )
        return 2
    out_dir = Path(args.out)
    command = " ".join(["mirnet", *sys.argv[1:]])
    tables = []
    for test_set in sets:
        if not test_set.items:
            continue
        methods = dict(classical)
        if test_set.kind == "well-exposed":
            methods.pop("dark input", None)  # the input is the target: a perfect score says nothing
        methods.update(models)
        names = [item.name for item in test_set.items]
        figure_names = [n for n in (args.figure or [names[0]]) if n in names]
        unknown = [n for n in args.figure or [] if n not in names]
        if unknown and len(sets) == 1:
            print(
                f"mirnet evaluate: warning: --figure: no image named {', '.join(unknown)} in this set "
                f"(names look like {names[0]})",
                file=sys.stderr,
            )
        rows, kept = evaluate_methods(
            test_set.items, methods, set(figure_names), progress=not args.quiet, desc=test_set.name
        )
        where = out_dir if len(sets) == 1 else out_dir / test_set.name
        meta = {"data": test_set.source, "set": test_set.name, "kind": test_set.kind, "command": command}
        meta.update(split=args.split, models=model_meta, precision=args.precision)
        summary = write_reports(rows, where, meta)
        reports = ["results.md", "per_image.csv", "results.json"]
        if kept:
            comparison_figure({n: kept[n] for n in figure_names if n in kept}, where / "comparison.png")
            reports.append("comparison.png")
        title = f"{test_set.name}: {test_set.source}, {test_set.kind}, {len(test_set.items)} images"
        tables.append(markdown_table(summary, title))
        print(tables[-1])
        print(f"reports in {where}/ ({', '.join(reports)})\n")
    if len(sets) > 1:
        with atomic_path(out_dir / "summary.md") as tmp:
            tmp.write_text(f"`{command}`\n\n" + "\n".join(tables))
        print(f"all tables in {out_dir / 'summary.md'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from mirnet.device import OptionError
    from mirnet.export import cached_aoti, export_aoti, export_onnx
    from mirnet.inference import load_model
    from mirnet.weights import load_weights, resolve_weights

    weights = resolve_weights(args.weights or args.model)
    if args.format == "aoti":
        enhancer = load_model(weights, device=args.device, precision=args.precision, compile=False)
        target = (
            Path(args.output) if args.output else cached_aoti(enhancer.model, weights, enhancer.precision)
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        print(
            f"compiling {weights.name} ({enhancer.precision}) for this machine: a few minutes, once",
            file=sys.stderr,
        )
        export_aoti(enhancer.model, target, enhancer.precision)
        found = "" if args.output else "; mirnet enhance and mirnet serve now run it (it loads in seconds)"
        print(f"wrote {target}{found}")
        return 0
    if not args.output:
        raise OptionError("give the ONNX file to write: mirnet export OUT.onnx")
    model, info = load_weights(weights)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, args.output, dynamo=args.dynamo)
    print(f"wrote {path} ({info['name']}; input 'image' (N, 3, H, W) in [0, 1], output 'enhanced')")
    if info.get("self_ensemble", 1) > 1:
        print(
            f"note: the file holds one pass of the network; {weights.name} averages "
            f"{info['self_ensemble']} flipped copies of each photo, which mirnet does around it "
            f"(mirnet enhance --weights {path} --self-ensemble {info['self_ensemble']})",
            file=sys.stderr,
        )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from mirnet.convert import LICENCE_NOTE, convert_checkpoint

    weights, card = convert_checkpoint(args.source, args.output)
    print(f"wrote {weights} (the official MIRNet network) and {card}, its model card")
    print(LICENCE_NOTE)
    return 0


def _add_self_ensemble(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--self-ensemble",
        type=int,
        choices=SELF_ENSEMBLE_COPIES,
        metavar="N",
        help="average each photo's result over N of its flips and transposes (1, 2, 4 or 8): N times "
        "the time, a cleaner result; default: what the model asks for (quality: 8, others: 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirnet",
        description="Low-light photo enhancement with MIRNet: enhance photos, train, evaluate, export.",
    )
    parser.add_argument("--version", action="version", version=f"mirnet {mirnet.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    enhance = commands.add_parser(
        "enhance",
        help="brighten and denoise low-light photos and videos",
        description="Enhance photos with a trained MIRNet. Each INPUT is a file, a folder (its "
        "images and videos) or a glob. Writes NAME_enhanced.png beside each input, or into -o DIR; never "
        "over an input. Files that fail are reported and the others still get done; the exit "
        "status is 1 if any failed. Videos (.mp4 .mov .mkv .avi .webm .m4v; the video extra) "
        "become NAME_enhanced.mp4 (.mov, .mkv for .mkv and .webm) in H.264, with their sound. "
        "Under torchrun (torchrun --nproc_per_node N -m mirnet enhance FOLDER -o DIR) each process "
        "takes its share of the inputs, one GPU each where there are GPUs.",
    )
    enhance.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    enhance.add_argument("-o", "--output", metavar="DIR", help="folder for the results (created if needed)")
    source = enhance.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        help="bundled model: tiny (the default) or quality (tiny's result averaged over 8 flipped "
        "copies of each photo: cleaner, 8x the time)",
    )
    source.add_argument(
        "--weights",
        metavar="FILE",
        help="a .safetensors weights file from mirnet train or mirnet convert, an .onnx export, "
        "or the authors' .pth (converted at every load)",
    )
    enhance.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    enhance.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 where the CPU or GPU has it natively (1.7-1.9x faster, outputs over "
        "54 dB from fp32), else fp32; fp32: the reference; bf16: autocast",
    )
    enhance.add_argument(
        "--tile",
        type=integer(0, 100_000),
        default=None,
        metavar="SIZE",
        help="process in SIZE x SIZE tiles (bounded memory); default: whole when the photo fits in "
        "memory, else 512-pixel tiles; 0: always whole",
    )
    enhance.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="torch (default) or onnxruntime (CPU; exports the model to ONNX once and caches it)",
    )
    enhance.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run a compiled model: the package of mirnet export --format aoti if one was built on "
        "this machine (loads in seconds), else torch.compile (20-70 s per photo size, in every "
        "process). By default the package is used when there is one, and nothing is compiled; "
        "--no-compile always runs the eager model",
    )
    enhance.add_argument(
        "--fast",
        action="store_true",
        help="--compile plus bf16 where the CPU or GPU has it: about 3x faster per photo than plain "
        "fp32 on an AVX-512 CPU; run mirnet export --format aoti once so that it starts in seconds; "
        "ignored by onnxruntime",
    )
    _add_self_ensemble(enhance)
    enhance.add_argument("--bits", type=int, choices=[8, 16], default=8, help="PNG bit depth (default 8)")
    enhance.add_argument(
        "--max-megapixels",
        type=number(0, 100_000),
        default=100.0,
        metavar="N",
        help="refuse photos over N megapixels rather than run out of memory (default 100; 0: no limit)",
    )
    enhance.add_argument(
        "--video-quality",
        type=integer(0, 51),
        default=DEFAULT_QUALITY,
        metavar="CRF",
        help=f"H.264 constant rate factor for videos: 0 lossless, 51 worst (default {DEFAULT_QUALITY})",
    )
    enhance.add_argument(
        "--frame-by-frame",
        action="store_true",
        help="enhance each video frame on its own, without the moving average of the attention "
        "statistics over frames (reset at scene cuts) that keeps videos from flickering",
    )
    enhance.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip inputs whose output exists already (to resume a stopped job)",
    )
    enhance.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    enhance.add_argument(
        "-v", "--verbose", action="store_true", help="list each output; tracebacks on errors"
    )
    enhance.set_defaults(func=_enhance)

    evaluate = commands.add_parser(
        "evaluate",
        help="score models and classical methods on test sets",
        description="PSNR/SSIM (plain and GT-mean) per image and on average, for models and the "
        "classical baselines (dark input, autocontrast, histogram equalisation, CLAHE, gamma), on "
        "one or more test sets. Writes results.md, per_image.csv, results.json and comparison.png "
        "into --out (into --out/SET/ for several sets, with all tables in --out/summary.md).",
    )
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--model", nargs="+", help="bundled model name(s): tiny (the default), quality")
    source.add_argument("--weights", nargs="+", metavar="FILE", help="one or more .safetensors weights files")
    evaluate.add_argument(
        "--data",
        nargs="+",
        metavar="[NAME=]ROOT",
        help="paired test sets: dataset roots (real_pairs, LoL-v1, LOL-v2 or low/+high/), each its own table",
    )
    evaluate.add_argument(
        "--darkened",
        nargs="+",
        metavar="FOLDER",
        help="clean photos darkened as a camera would (a fixed seed per photo), scored against themselves",
    )
    evaluate.add_argument(
        "--well-exposed",
        nargs="+",
        metavar="FOLDER",
        help="well-exposed photos as their own targets ('do no harm': the output should be nearly the input)",
    )
    evaluate.add_argument("--split", default="test", choices=["test", "eval", "train"], help="default: test")
    evaluate.add_argument("--out", default="evaluation", help="report folder (default: evaluation/)")
    evaluate.add_argument("--figure", nargs="*", metavar="NAME", help="image names for comparison.png")
    evaluate.add_argument("--limit", type=integer(1), metavar="N", help="only the first N pairs")
    evaluate.add_argument("--no-classical", action="store_true", help="skip the classical methods")
    evaluate.add_argument("--classical-only", action="store_true", help="skip the model")
    evaluate.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    evaluate.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default here: the reference the published scores use), bf16, or auto as enhance",
    )
    _add_self_ensemble(evaluate)
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    evaluate.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    evaluate.set_defaults(func=_evaluate)

    export = commands.add_parser(
        "export",
        help="export a model for deployment (ONNX), or compile it once for this machine (AOTInductor)",
        description="Export a model as ONNX with dynamic batch, height and width, for ONNX Runtime; "
        "or, with --format aoti, compile it ahead of time for this machine's processor (a few "
        "minutes, once): written to mirnet's cache when no OUT is given, where mirnet enhance (with or "
        "without --fast) and mirnet serve find it and load it in seconds instead of compiling in "
        "every process.",
    )
    source = export.add_mutually_exclusive_group()
    source.add_argument("--model", help="bundled model name (default: the default model)")
    source.add_argument("--weights", metavar="FILE", help="a .safetensors weights file")
    export.add_argument("--format", choices=["onnx", "aoti"], default="onnx", help="onnx (default) or aoti")
    export.add_argument("--dynamo", action="store_true", help="onnx: use PyTorch's dynamo exporter (slower)")
    export.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="aoti: auto (default: bf16 where the hardware has it, as --fast), fp32 or bf16",
    )
    export.add_argument("--device", default="auto", help="aoti: cpu, cuda, cuda:N or auto (default)")
    export.add_argument(
        "output", nargs="?", metavar="OUT", help="OUT.onnx; for aoti, OUT.pt2 (default: mirnet's cache)"
    )
    export.set_defaults(func=_export)

    convert = commands.add_parser(
        "convert",
        help="convert the authors' MIRNet checkpoint (.pth) to a weights file",
        description="Convert a checkpoint of the official MIRNet code (github.com/swz30/MIRNet, "
        "README, 'pretrained models': model_lol.pth, model_fivek.pth) into OUT.safetensors for the "
        "'official' configuration, with its model card OUT.json (the source's SHA-256 and "
        "licence). Read with torch.load(weights_only=True): nothing in the file can run. Every "
        "tensor must fit; the first that does not is named. The authors' weights are for "
        "non-commercial research use; this package never ships them.",
    )
    convert.add_argument("source", metavar="CHECKPOINT.pth", help="the authors' checkpoint")
    convert.add_argument("output", metavar="OUT.safetensors", help="the weights file to write")
    convert.set_defaults(func=_convert)

    train = commands.add_parser(
        "train",
        help="train a model on paired low/normal-light images",
        description="Train MIRNet as a YAML config describes. Validation pairs are held out of "
        "the training pairs; test pairs are never read.",
    )
    train.add_argument("--config", required=True, help="experiment YAML, e.g. configs/tiny.yaml")
    train.add_argument(
        "--data",
        help="dataset root (real_pairs, LoL-v1, LOL-v2 or low/+high/); not needed when the config "
        "lists data.sources",
    )
    train.add_argument("--out", help="run directory (default: runs/CONFIG_NAME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    train.set_defaults(func=_train)

    add_serve_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mirnet`` console script.

    Expected failures (a bad image, dataset, config or weights file, an option that cannot
    work here, a file-system error) are
    reported as one line naming the file, with exit status 1; ``-v``/``--verbose``, where a
    command has it, shows the traceback too. Ctrl-C exits with status 130.
    """
    from mirnet.data import PairedDataError
    from mirnet.device import OptionError, keep_freed_memory
    from mirnet.io import ImageReadError
    from mirnet.training import ConfigError
    from mirnet.weights import WeightsError

    args = build_parser().parse_args(argv)
    keep_freed_memory()  # process-wide, so the application sets it, not the library
    try:
        return args.func(args)
    except ModuleNotFoundError as err:
        extra = OPTIONAL_PACKAGES.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"mirnet {args.command}: error: this needs {err.name}, from the {extra} extra: "
            f"pip install -c constraints.txt -e '.[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except (ImageReadError, PairedDataError, WeightsError, ConfigError, OptionError, OSError) as err:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"mirnet {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Outputs are written atomically, so stopping leaves no half-written file behind.
        print(f"mirnet {args.command}: interrupted", file=sys.stderr)
        return 130
