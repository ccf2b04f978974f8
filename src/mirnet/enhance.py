"""Enhancing files and folders: what ``mirnet enhance`` does, as functions.

Decoding the next photo and encoding the previous result run in worker threads while the
model works on the current one (PyTorch and Pillow release the GIL), so both cores stay busy
on a folder. Every output is written atomically and never over an input; a file that fails
is reported and the others still get done.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mirnet.inference import Enhancer
from mirnet.io import ImageReadError, is_image_path, read_image, remove_stale_temporaries, write_image
from mirnet.video import (
    DEFAULT_QUALITY,
    DEFAULT_SMOOTHING,
    VideoError,
    enhance_video,
    is_video_path,
    output_suffix,
)

OUTPUT_SUFFIX = "_enhanced"


@dataclass
class Outcome:
    """What happened to one input: ``output`` on success, ``error`` otherwise."""

    input: Path
    output: Path | None = None
    error: str | None = None


def collect_inputs(arguments: Iterable[str]) -> tuple[list[Path], list[Outcome]]:
    """Expand files, folders (their images and videos, not recursively) and glob patterns.

    Folders skip files that are our own outputs (``*_enhanced.*``), so running twice on a
    folder does not enhance the first run's results. Returns (inputs, failures) where
    failures are arguments that matched nothing or do not exist.
    """
    inputs: list[Path] = []
    failures: list[Outcome] = []
    for argument in arguments:
        path = Path(argument)
        if any(ch in argument for ch in "*?[") and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(argument))
            if not matches:
                failures.append(Outcome(path, error="no file matches this pattern"))
            inputs.extend(m for m in matches if m.is_file())
        elif path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and (is_image_path(p) or is_video_path(p))
                and not p.stem.endswith(OUTPUT_SUFFIX)
            )
            if not found:
                failures.append(Outcome(path, error="folder holds no images or videos"))
            inputs.extend(found)
        elif not path.exists():
            failures.append(Outcome(path, error="no such file or folder"))
        else:
            inputs.append(path)  # a bad file is reported when it is read
    unique = list(dict.fromkeys(inputs))
    return unique, failures


def output_path_for(input_path: Path, out_dir: Path | None, suffix: str = ".png") -> Path:
    """``NAME_enhanced.png`` beside the input, or in ``out_dir``."""
    folder = out_dir if out_dir is not None else input_path.parent
    return folder / f"{input_path.stem}{OUTPUT_SUFFIX}{suffix}"


def plan_outputs(inputs: list[Path], out_dir: Path | None) -> tuple[list[tuple[Path, Path]], list[Outcome]]:
    """Pair each input with its output, refusing any output that would replace an input or
    another input's output."""
    resolved_inputs = {p.resolve() for p in inputs}
    claimed: dict[Path, Path] = {}
    plan, failures = [], []
    for path in inputs:
        output = output_path_for(path, out_dir, output_suffix(path))
        key = output.resolve()
        if key in resolved_inputs:
            failures.append(
                Outcome(path, error=f"output {output} would overwrite an input; choose another -o")
            )
        elif key in claimed:
            failures.append(Outcome(path, error=f"output {output} is already the output of {claimed[key]}"))
        else:
            claimed[key] = path
            plan.append((path, output))
    return plan, failures


def enhance_files(
    plan: list[tuple[Path, Path]],
    enhancer: Enhancer,
    bits: int = 8,
    progress: bool = True,
    on_outcome: Callable[[Outcome], None] | None = None,
    max_pixels: int | None = None,
) -> list[Outcome]:
    """Enhance each (input, output) pair; returns one :class:`Outcome` per pair, in order.

    Reading the next input and writing finished outputs overlap with the model's work.
    Inputs with more than ``max_pixels`` pixels fail with an error instead of being decoded.
    Temporary files that a killed earlier run left in the output folders are removed first
    (only ours: :func:`mirnet.io.remove_stale_temporaries`).
    """
    outcomes: list[Outcome] = []
    if not plan:
        return outcomes
    _remove_stale_temporaries(plan)
    bar = tqdm(total=len(plan), unit="img", desc="enhancing", disable=not progress)
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        reads = [pool.submit(read_image, plan[0][0], max_pixels)]
        writes: list[tuple[Outcome, Future]] = []
        for index, (source, target) in enumerate(plan):
            if index + 1 < len(plan):
                reads.append(pool.submit(read_image, plan[index + 1][0], max_pixels))
            outcome = Outcome(source)
            try:
                image = reads[index].result()
                reads[index] = None  # free the decoded image once used
                result = enhancer.enhance_tensor(image)
                outcome.output = target
                writes.append((outcome, pool.submit(write_image, target, result, bits)))
            except ImageReadError as err:
                outcome.error = str(err).removeprefix(f"{source}: ")
                _finish(outcome, outcomes, on_outcome)
            except (RuntimeError, ValueError, MemoryError) as err:
                outcome.error = f"enhancement failed: {err}"
                _finish(outcome, outcomes, on_outcome)
            writes = _collect_writes(writes, outcomes, on_outcome, wait=False)
            bar.update()
            bar.set_postfix(img_per_s=f"{(index + 1) / (time.perf_counter() - began):.2f}")
        _collect_writes(writes, outcomes, on_outcome, wait=True)
    bar.close()
    order = {source: i for i, (source, _) in enumerate(plan)}
    return sorted(outcomes, key=lambda o: order[o.input])


def _remove_stale_temporaries(plan: list[tuple[Path, Path]]) -> None:
    """Temporary files a killed earlier run left in the output folders (only ours)."""
    for folder in sorted({target.parent for _, target in plan}):
        remove_stale_temporaries(folder)


def _finish(outcome: Outcome, outcomes: list[Outcome], on_outcome) -> None:
    outcomes.append(outcome)
    if on_outcome:
        on_outcome(outcome)


def _collect_writes(writes, outcomes, on_outcome, wait: bool):
    pending = []
    for outcome, future in writes:
        if not wait and not future.done():
            pending.append((outcome, future))
            continue
        try:
            future.result()
        except OSError as err:
            outcome.error = f"cannot write {outcome.output}: {err.strerror or err}"
            outcome.output = None
        _finish(outcome, outcomes, on_outcome)
    return pending


def enhance_videos(
    plan: list[tuple[Path, Path]],
    enhancer: Enhancer,
    quality: int = DEFAULT_QUALITY,
    smoothing: float = DEFAULT_SMOOTHING,
    progress: bool = True,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Enhance each (input video, output) pair with :func:`mirnet.video.enhance_video`, one
    progress bar of frames per video; returns one :class:`Outcome` per pair, in order.

    A video that cannot be read or enhanced, or a missing PyAV, is an error for that video
    only; the others still get done. Outputs are written atomically.
    """
    outcomes: list[Outcome] = []
    _remove_stale_temporaries(plan)
    for source, target in plan:
        outcome = Outcome(source)
        try:
            enhance_video(enhancer, source, target, quality=quality, smoothing=smoothing, progress=progress)
            outcome.output = target
        except VideoError as err:
            outcome.error = str(err)
        except ModuleNotFoundError as err:
            if err.name != "av":
                raise
            outcome.error = str(err)
        except (RuntimeError, MemoryError) as err:
            outcome.error = f"enhancement failed: {err}"
        except OSError as err:
            outcome.error = f"cannot write {target}: {err.strerror or err}"
        _finish(outcome, outcomes, on_outcome)
    return outcomes
