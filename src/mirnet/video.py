"""Enhancing videos: decode, enhance and encode as a stream, without flicker, with the sound kept.

Frames are decoded with PyAV (FFmpeg's libraries, the ``video`` extra), enhanced in small
batches and encoded to H.264 as they come, so memory does not grow with the video's length.
The audio streams are copied packet for packet, the frame timestamps (so the frame rate, frame
count and duration) and the rotation are kept, and the output is written atomically.

MIRNet's attention pools every feature map over the whole frame, so frames enhanced one by
one flicker: their pooled statistics jump with every moving object or noise pattern.
:class:`TemporalContext` feeds the network an exponential moving average of those statistics
over frames instead, reset at scene cuts (:class:`SceneCutDetector`): the mechanism that
:class:`mirnet.tiling.GlobalContext` uses to give every tile the photo's statistics, applied
along time. The network itself knows nothing of video.
"""

from __future__ import annotations

import copy
import math
import struct
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mirnet.io import atomic_path
from mirnet.tiling import GlobalContext, PoolingHooks, enhance_tiled

if TYPE_CHECKING:
    from mirnet.inference import Enhancer

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
# The container each input kind is written to: H.264 is not allowed in WebM, and Matroska
# takes any audio codec that WebM may hold; AVI cannot carry timestamps (nor faststart), MP4 can.
OUTPUT_CONTAINERS = {
    ".mp4": ".mp4",
    ".m4v": ".mp4",
    ".avi": ".mp4",
    ".mov": ".mov",
    ".mkv": ".mkv",
    ".webm": ".mkv",
}
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}

# x264's constant rate factor: 0 lossless, 51 worst; its own default is 23. 18 is about
# visually lossless, worth it for footage that has just been denoised.
DEFAULT_QUALITY = 18
# Time constant of the moving average, in seconds of video (so the same smoothing at any
# frame rate): 0.3 s is 9 frames at 30 fps. Longer smooths more but lags behind real changes
# of light that are not scene cuts.
DEFAULT_SMOOTHING = 0.3
# Frames per forward pass: enough to amortise per-call overheads, few enough that 1080p
# frames stay within a few GB of activations with the tiny model.
DEFAULT_BATCH_FRAMES = 4
# Fraction of the picture that must change at once for a frame to start a new scene (and the
# moving average to restart); see SceneCutDetector for what was measured.
DEFAULT_SCENE_CUT = 0.5

INSTALL_HINT = "pip install -c constraints.txt -e '.[video]'"


class VideoError(ValueError):
    """A video that cannot be read or enhanced. The message does not name the file."""


def is_video_path(path: Path) -> bool:
    """Whether a path has one of the video suffixes we read."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def output_suffix(path: Path) -> str:
    """The suffix of the enhanced file for an input: ``.png`` for photos, the output
    container for videos (see :data:`OUTPUT_CONTAINERS`)."""
    return OUTPUT_CONTAINERS.get(path.suffix.lower(), ".png")


def import_av() -> Any:
    """PyAV, or a :class:`ModuleNotFoundError` (``name='av'``) that says how to install it."""
    try:
        import av
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"enhancing videos needs PyAV, from the video extra: {INSTALL_HINT}", name="av"
        ) from err
    return av


class TemporalContext(PoolingHooks):
    """Feeds every frame a moving average of the attention statistics of the frames before it.

    A forward hook on each :class:`GlobalAveragePool` replaces the frame's pooled mean by
    ``w * previous + (1 - w) * own`` (in fp32), where ``w`` is ``keep`` within a scene and 0 at
    the first frame and at scene cuts. Pooling calls are told apart by their order within a
    forward pass, as in :class:`mirnet.tiling.GlobalContext`. Frames of a batch are blended in
    order inside the hook, so a batch gives the same result as its frames one at a time.

    The hook branches on nothing but the call order, and reads the per-frame weights as a
    tensor, so ``torch.compile`` can trace it into the graph: see :meth:`compile`.
    """

    def __init__(self, model: nn.Module, keep: float):
        if not 0.0 <= keep < 1.0:
            raise ValueError(f"keep must be in [0, 1), not {keep}")
        super().__init__(model)
        self.keep = keep
        self.state: list[torch.Tensor] = []  # one running average per pooling call, in call order
        self.weights = torch.zeros(1)
        self.position = 0

    def start_batch(self, cuts: Sequence[bool], device: torch.device | str = "cpu") -> None:
        """Get ready for a batch of consecutive frames; ``cuts[i]``: frame i starts a scene."""
        first = not self.state
        weights = [0.0 if cut or (first and i == 0) else self.keep for i, cut in enumerate(cuts)]
        self.weights = torch.tensor(weights, dtype=torch.float32, device=device)
        self.position = 0

    def blend(self, position: int, pooled: torch.Tensor) -> torch.Tensor:
        """Running averages for the (N, C, 1, 1) statistics of pooling call ``position``."""
        values = pooled.float()
        if position == len(self.state):  # first batch only: a weight of 0 ignores this value
            self.state.append(torch.zeros_like(values[0]))
        state = self.state[position]
        blended = []
        for index in range(values.shape[0]):
            weight = self.weights[index]
            state = weight * state + (1.0 - weight) * values[index]
            blended.append(state)
        self.state[position] = state
        return torch.stack(blended)

    def compile(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """``model``, hooked by this context, compiled with the running averages and weights as
        inputs of the graph and the new averages as outputs.

        Tensors that the graph found on this object would be guarded by identity (and folded
        in as constants), so every batch would compile again. Call the result only once the
        state exists (after an eager batch), so that the graph is traced once.
        """
        from mirnet.inference import _compiled  # the same settings as the photo path

        def step(batch, state, weights):
            self.state, self.weights, self.position = list(state), weights, 0
            return model(batch), list(self.state)

        compiled_step = _compiled(step)

        def run(batch: torch.Tensor) -> torch.Tensor:
            out, self.state = compiled_step(batch, self.state, self.weights)
            return out

        return run

    def _hook(self, pool: nn.Module, inputs: tuple[torch.Tensor, ...], pooled: torch.Tensor) -> torch.Tensor:
        blended = self.blend(self.position, pooled)
        self.position += 1
        return blended.to(pooled.dtype)


class _TemporalTiles(GlobalContext):
    """A tiled frame's photo-wide statistics, blended over time before they are replayed."""

    def __init__(self, model: nn.Module, temporal: TemporalContext):
        super().__init__(model)
        self.temporal = temporal

    def replay(self) -> None:
        # The sums are keyed in the order of the first tile's pooling calls: the call order.
        for position, key in enumerate(self.sums):
            mean = self.sums[key] / self.counts[key]
            self.sums[key], self.counts[key] = self.temporal.blend(position, mean), 1
        super().replay()


class SceneCutDetector:
    """Tells which frames start a new scene: those where most of the picture changed at once.

    Each frame is averaged down to a grid of cells (16 x 9 for 16:9 video), in the square
    root of luma, which spreads out the dark tones that low-light video is made of; the
    averaging removes the noise. A frame is a cut when more than ``threshold`` of its cells
    differ from the frame before by more than ``cell_change``. Measured on darkened photos
    (scripts/video_figure.py's clip, the samples): cuts between two dark scenes change 69-85%
    of the cells; a flickering torch beam 21%, a pan of 5% of the width per frame 19%; a light
    that doubles the whole scene's brightness 94% (a new scene for the network, too).
    """

    def __init__(
        self, threshold: float = DEFAULT_SCENE_CUT, cell_change: float = 0.05, grid: tuple[int, int] = (9, 16)
    ):
        self.threshold = threshold
        self.cell_change = cell_change
        self.grid = grid
        self.previous: torch.Tensor | None = None

    def cells(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, rows, columns) square-root luma of (N, 3, H, W) frames in [0, 1], per cell."""
        height, width = frames.shape[-2:]
        grid = (min(self.grid[0], height), min(self.grid[1], width))
        small = F.adaptive_avg_pool2d(frames.float(), grid)
        return (0.299 * small[:, 0] + 0.587 * small[:, 1] + 0.114 * small[:, 2]).clamp(0, 1).sqrt()

    def changed(self, before: torch.Tensor, after: torch.Tensor) -> float:
        """The fraction of cells that changed markedly between two frames' :meth:`cells`."""
        return ((after - before).abs() > self.cell_change).float().mean().item()

    def __call__(self, frames: torch.Tensor) -> list[bool]:
        """One flag per frame of a batch of consecutive frames: True where a new scene starts.
        The first frame of a video is not a cut (there is nothing to cut from)."""
        cuts = []
        for cells in self.cells(frames):
            cuts.append(self.previous is not None and self.changed(self.previous, cells) > self.threshold)
            self.previous = cells
        return cuts


# One hooked copy of each compiled Enhancer's model and its compiled step, reused from video to
# video (one compilation per frame size). A copy, because torch.compile does not guard on
# module hooks: a graph traced with them must never serve the hook-free photo path, nor the
# other way round.
_COMPILED_TEMPORAL: weakref.WeakKeyDictionary[Enhancer, tuple[nn.Module, TemporalContext, Any]] = (
    weakref.WeakKeyDictionary()
)


class FrameEnhancer:
    """Enhances the frames of one video, in order, batch by batch.

    Args:
        enhancer: the model, its device, precision and tiling.
        fps: the video's frame rate, to turn ``smoothing`` into a per-frame weight.
        smoothing: time constant of the moving average of the attention statistics, in
            seconds; 0 enhances each frame on its own (which flickers).
        scene_cut: the fraction of the picture that must change at once for a frame to
            start a new scene (where the average restarts), see :class:`SceneCutDetector`.

    Use as a context manager: the hooks live inside the ``with`` block.
    """

    def __init__(
        self,
        enhancer: Enhancer,
        fps: float,
        smoothing: float = DEFAULT_SMOOTHING,
        scene_cut: float = DEFAULT_SCENE_CUT,
    ):
        if smoothing < 0:
            raise ValueError(f"smoothing must be at least 0 seconds, not {smoothing}")
        self.enhancer = enhancer
        self.detector = SceneCutDetector(scene_cut)
        self.scene_cuts = 0
        self.smoothed = smoothing > 0 and enhancer.model is not None
        if smoothing > 0 and enhancer.model is None:
            warnings.warn(
                "a bare ONNX model cannot be given the attention statistics of earlier frames: "
                "enhancing each frame on its own (it may flicker)",
                stacklevel=2,
            )
        if getattr(enhancer, "self_ensemble", 1) > 1:
            # The temporal state follows one pass per frame, and 8 passes a frame would make a
            # video 8 times slower: videos run the network once, as the default model does.
            warnings.warn(
                f"videos run the model once per frame: its self-ensemble of {enhancer.self_ensemble} "
                "copies is for photos",
                stacklevel=2,
            )
        self.keep = math.exp(-1.0 / (smoothing * fps)) if self.smoothed else 0.0
        self.compiled = bool(getattr(enhancer, "compiled", False))
        self.batch_shape: tuple[int, ...] | None = None
        self._temporal: TemporalContext | None = None
        self._hooked = False
        self._eager: nn.Module | None = None
        self._run: Any = None
        # Tiled or whole, chosen on the first batch and kept for the video: the temporal
        # state lives in one place or the other.
        self._tile: int | None = None

    def __enter__(self) -> FrameEnhancer:
        return self

    def __exit__(self, *exc) -> None:
        if self._temporal is not None and self._hooked and not self.compiled:
            self._temporal.__exit__()  # the shared eager model gets its hooks back off
            self._hooked = False

    def _setup_temporal(self) -> None:
        """Hook the eager model, or a compiled copy of it that keeps its hooks for good."""
        model = self.enhancer.model
        if not self.compiled:
            self._temporal = TemporalContext(model, self.keep).__enter__()
            self._eager = self._run = model
        else:
            cached = _COMPILED_TEMPORAL.get(self.enhancer)
            if cached is None:
                copied = copy.deepcopy(model)
                temporal = TemporalContext(copied, self.keep).__enter__()
                cached = _COMPILED_TEMPORAL[self.enhancer] = (copied, temporal, temporal.compile(copied))
            self._eager, self._temporal, self._run = cached
            self._temporal.keep = self.keep
            self._temporal.state = []  # a new video: its first frame starts the average
        self._hooked = True

    def _pad(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A compiled graph is for one batch shape: fill a short last batch with copies."""
        count = frames.shape[0]
        if self.batch_shape is None:
            self.batch_shape = tuple(frames.shape)
        if self.compiled and count < self.batch_shape[0] and frames.shape[1:] == self.batch_shape[1:]:
            filler = frames[-1:].expand(self.batch_shape[0] - count, -1, -1, -1)
            frames = torch.cat([frames, filler])
        return frames, count

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """Enhance (N, 3, H, W) consecutive frames in [0, 1]; (N, 3, H, W) on the CPU back."""
        cuts = self.detector(frames)
        self.scene_cuts += sum(cuts)
        if not self.smoothed:
            padded, count = self._pad(frames)
            return self.enhancer.enhance_tensor(padded, self_ensemble=1)[:count]
        enhancer = self.enhancer
        if self._tile is None:
            self._tile = enhancer.tile_for(*frames.shape[-2:], images=len(frames))
        tile = self._tile
        if tile:
            # Frames this large go through the tiles one at a time, on the eager model
            # without temporal hooks, the blending done between the two tile passes.
            if self._temporal is None:
                self._temporal = TemporalContext(enhancer.model, self.keep)
            results = []
            for frame, cut in zip(frames, cuts):
                self._temporal.start_batch([cut], enhancer.device)
                context = _TemporalTiles(enhancer.model, self._temporal)
                with context:
                    results.append(
                        enhance_tiled(
                            lambda crop: enhancer._forward(crop, enhancer.model),
                            frame[None],
                            tile,
                            enhancer.overlap,
                            context=context,
                        )
                    )
            return torch.cat(results)
        if not self._hooked:
            self._setup_temporal()
        padded, count = self._pad(frames)
        self._temporal.start_batch(cuts + [False] * (padded.shape[0] - count), enhancer.device)
        # The first batch creates the running averages eagerly, so that the compiled graph
        # is traced once, with them in place (see TemporalContext).
        run = self._run if self._temporal.state else self._eager
        return enhancer._forward(padded, run).cpu()[:count]


@dataclass
class VideoSummary:
    """What :func:`enhance_video` did."""

    input: Path
    output: Path
    frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds
    audio_streams: int
    rotation: int  # degrees counter-clockwise, as players apply it
    scene_cuts: int
    smoothed: bool
    encoder: str
    seconds: float  # wall-clock time taken


def pick_encoder(av: Any) -> str:
    """The H.264 encoder to use: libx264 where PyAV's FFmpeg has it, else another that exists."""
    for name in ("libx264", "libopenh264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # UnknownCodecError; anything else also means "not usable here"
            continue
        return name
    raise VideoError("PyAV's FFmpeg has no H.264 or MPEG-4 encoder")


def _display_matrix(frame: Any) -> list[int] | None:
    """The frame's display matrix (rotation and flips) as 9 integers, if it has one."""
    for side_data in frame.side_data:
        if str(side_data.type).endswith("DISPLAYMATRIX"):
            return list(struct.unpack("=9i", bytes(side_data)))
    return None


def _frame_rate(stream: Any) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(30)


def _open_input(av: Any, src: Path) -> Any:
    """The input container, or a :class:`VideoError` that says what is wrong with the file."""
    if src.is_file() and src.stat().st_size == 0:
        raise VideoError("zero-length video: an empty file")
    try:
        container = av.open(str(src))
    except av.error.EOFError:  # Matroska, for one, ends at its header when no frame follows
        raise VideoError("zero-length video: the file ends before its first frame") from None
    except av.error.FFmpegError as err:
        raise VideoError(
            f"cannot read it as a video ({err.strerror or err}): truncated, or not a video file"
        ) from None
    if not container.streams.video:
        empty = not container.streams.audio  # MP4 leaves out a video track that has no frame
        container.close()
        raise VideoError(
            "zero-length video: no stream has any frame" if empty else "no video stream (audio only)"
        )
    if container.streams.video[0].codec_context is None:
        container.close()
        raise VideoError(f"unsupported video codec: PyAV {av.__version__}'s FFmpeg has no decoder for it")
    return container


def _configure_encoder(out: Any, source: Any, first: Any, quality: int, encoder: str) -> Any:
    """The output video stream, set up from the input stream and its first decoded frame."""
    rate = _frame_rate(source)
    stream = out.add_stream(encoder, rate=rate)
    context = stream.codec_context
    stream.width, stream.height = first.width, first.height
    # 4:2:0 needs even sizes; odd-sized videos keep full-resolution colour instead.
    even = first.width % 2 == 0 and first.height % 2 == 0
    stream.pix_fmt = "yuv420p" if even or encoder != "libx264" else "yuv444p"
    if not even and encoder != "libx264":
        raise VideoError(f"{first.width}x{first.height}: the {encoder} encoder needs even sizes")
    # The input's time base, so that every frame keeps its exact timestamp (variable frame
    # rates included), hence the frame count and duration.
    context.time_base = source.time_base or Fraction(1, 1) / rate
    if source.sample_aspect_ratio:
        context.sample_aspect_ratio = source.sample_aspect_ratio
    for attribute in ("colorspace", "color_range", "color_primaries", "color_trc"):
        setattr(context, attribute, getattr(first, attribute))
    if encoder == "libx264":
        stream.options = {"crf": str(quality), "preset": "medium"}
    else:
        # No constant-quality mode in every fallback encoder: a bit rate for about the same
        # quality (x264 doubles the rate for every 6 CRF steps; 0.1 bit/pixel at CRF 23).
        bits_per_pixel = 0.1 * 2 ** ((23 - quality) / 6)
        context.bit_rate = int(bits_per_pixel * first.width * first.height * float(rate))
    matrix = _display_matrix(first)
    if matrix is not None:
        stream.set_display_matrix(matrix)
    return stream


def _to_tensor(frames: list[Any]) -> torch.Tensor:
    """Decoded frames as an (N, 3, H, W) float tensor in [0, 1] (the frames' own colour
    matrix and range, so that the encoder can use the same ones back)."""
    arrays = np.stack([frame.to_ndarray(format="rgb24") for frame in frames])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)


def _to_frames(av: Any, enhanced: torch.Tensor, sources: list[Any]) -> Iterator[Any]:
    """Enhanced frames as PyAV frames carrying their sources' timestamps and colour tags."""
    arrays = enhanced.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for array, source in zip(arrays, sources):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        frame.pts, frame.time_base, frame.duration = source.pts, source.time_base, source.duration
        # The encoder converts to YUV with the matrix and range these tags name.
        frame.colorspace, frame.color_range = source.colorspace, source.color_range
        yield frame


class _Timestamps:
    """Makes frame timestamps strictly increasing, as encoders require, whatever the input."""

    def __init__(self, step: int):
        self.step = max(step, 1)
        self.last: int | None = None

    def fix(self, frame: Any) -> None:
        pts = frame.pts
        if pts is None or (self.last is not None and pts <= self.last):
            pts = 0 if self.last is None else self.last + (frame.duration or self.step)
        frame.pts = self.last = pts


def enhance_video(
    enhancer: Enhancer,
    src: str | Path,
    dst: str | Path,
    quality: int = DEFAULT_QUALITY,
    smoothing: float = DEFAULT_SMOOTHING,
    scene_cut: float = DEFAULT_SCENE_CUT,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    progress: bool = False,
) -> VideoSummary:
    """Enhance a video file into ``dst`` (an ``.mp4``, ``.mov`` or ``.mkv``).

    Frames are decoded, enhanced ``batch_frames`` at a time and encoded to H.264 at constant
    rate factor ``quality`` as they come. Audio streams are copied unchanged; frame
    timestamps, frame rate, rotation and colour tags are kept. ``smoothing`` (seconds, 0 for
    frame by frame) and ``scene_cut``: see :class:`FrameEnhancer`. ``dst`` is written
    atomically: a failure or interruption leaves nothing under its name.

    Raises:
        VideoError: the input cannot be read or enhanced (the message does not name it).
        ModuleNotFoundError: PyAV is not installed.
    """
    av = import_av()
    src, dst = Path(src), Path(dst)
    if not 0 <= quality <= 51:
        raise ValueError(f"quality (CRF) must be in 0..51, not {quality}")
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be at least 1, not {batch_frames}")
    muxer = _MUXERS.get(dst.suffix.lower())
    if muxer is None:
        raise ValueError(f"{dst}: write videos to .mp4, .mov or .mkv")
    began = time.perf_counter()
    encoder = pick_encoder(av)
    with _open_input(av, src) as container:
        source = container.streams.video[0]
        source.thread_type = "AUTO"  # FFmpeg's own frame threads: decoding keeps up
        audio = list(container.streams.audio)
        fps = float(_frame_rate(source))
        declared = source.frames
        expected = declared or (round(container.duration / 1e6 * fps) if container.duration else None)
        options = {"movflags": "+faststart"} if muxer in ("mp4", "mov") else {}
        bar = tqdm(total=expected, unit="frame", desc=src.name, disable=not progress, leave=False)
        with atomic_path(dst) as tmp, FrameEnhancer(enhancer, fps, smoothing, scene_cut) as frames_in:
            # The format is named: the temporary file's suffix says nothing to FFmpeg.
            with av.open(str(tmp), "w", format=muxer, options=options) as out:
                copies = {stream.index: out.add_stream_from_template(stream) for stream in audio}
                state = _Transcode(av, out, source, copies, frames_in, quality, encoder, batch_frames, bar)
                try:
                    for packet in container.demux(source, *audio):
                        state.take(packet)
                    state.finish()
                except av.error.FFmpegError as err:
                    raise VideoError(
                        f"cannot decode or encode frame {state.decoded + 1}: {err.strerror or err}"
                    ) from None
                finally:
                    bar.close()
                if state.decoded == 0:
                    raise VideoError("zero-length video: its video stream has no frames")
                # Containers' frame counts can be a frame or two off what decodes (an AVI index
                # counts skipped frames); a truncated file falls well short.
                if declared and declared - state.decoded > max(2, declared // 50):
                    raise VideoError(
                        f"truncated: only {state.decoded} of its {declared} frames could be decoded"
                    )
    return VideoSummary(
        input=src,
        output=dst,
        frames=state.decoded,
        fps=fps,
        width=state.width,
        height=state.height,
        duration=float(state.end * source.time_base) if state.end is not None else 0.0,
        audio_streams=len(audio),
        rotation=state.rotation,
        scene_cuts=frames_in.scene_cuts,
        smoothed=frames_in.smoothed,
        encoder=encoder,
        seconds=time.perf_counter() - began,
    )


class _Transcode:
    """The running state of :func:`enhance_video`: packets in, frames through, packets out.

    The output's header is written at its first packet, and it must describe the video stream
    (size, rotation), which the first decoded frame tells: audio packets wait until then.
    """

    def __init__(self, av, out, source, copies, frames_in, quality, encoder, batch_frames, bar):
        self.av, self.out, self.source, self.copies = av, out, source, copies
        self.frames_in, self.quality, self.encoder = frames_in, quality, encoder
        self.batch_frames, self.bar = batch_frames, bar
        self.stream = None
        self.waiting_audio: list[Any] = []
        self.pending: list[Any] = []
        self.decoded = 0
        self.width = self.height = self.rotation = 0
        self.end: int | None = None
        step = round(1 / (_frame_rate(source) * source.time_base)) if source.time_base else 1
        self.timestamps = _Timestamps(step)

    def take(self, packet: Any) -> None:
        if packet.stream.index in self.copies:
            if packet.dts is None:  # the demuxer's end-of-stream marker, not data
                return
            packet.stream = self.copies[packet.stream.index]
            if self.stream is None:
                self.waiting_audio.append(packet)
            else:
                self.out.mux(packet)
            return
        for frame in packet.decode():
            self._add(frame)

    def _add(self, frame: Any) -> None:
        if self.stream is None:
            self.stream = _configure_encoder(self.out, self.source, frame, self.quality, self.encoder)
            self.width, self.height = frame.width, frame.height
            self.rotation = frame.rotation
            for packet in self.waiting_audio:
                self.out.mux(packet)
            self.waiting_audio = []
        self.timestamps.fix(frame)
        self.decoded += 1
        self.pending.append(frame)
        if len(self.pending) >= self.batch_frames:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        enhanced = self.frames_in(_to_tensor(self.pending))
        for frame in _to_frames(self.av, enhanced, self.pending):
            self.out.mux(self.stream.encode(frame))
        last = self.pending[-1]
        self.end = last.pts + (last.duration or self.timestamps.step)
        self.bar.update(len(self.pending))
        self.pending = []

    def finish(self) -> None:
        # The decoder has given up its last frames already: the demuxer ends every stream
        # with an empty packet, which flushes it.
        self._flush()
        if self.stream is not None:
            self.out.mux(self.stream.encode(None))


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video's first video stream as (H, W, 3) uint8 RGB arrays, in order."""
    av = import_av()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def probe_video(path: str | Path) -> dict[str, Any]:
    """A video's frame rate, declared frame count, duration (s), size, rotation and audio
    codecs, as its container states them."""
    av = import_av()
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first = next(container.decode(video), None)
        duration = video.duration * video.time_base if video.duration else None
        return {
            "fps": float(_frame_rate(video)),
            "frames": video.frames,
            "duration": float(duration) if duration is not None else container.duration / 1e6,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "rotation": first.rotation if first is not None else 0,
            "audio": [stream.codec_context.name for stream in container.streams.audio],
            "audio_durations": [
                float(s.duration * s.time_base) if s.duration else None for s in container.streams.audio
            ],
        }


def _luma(frames: np.ndarray) -> np.ndarray:
    frames = frames.astype(np.float64)
    return 0.299 * frames[..., 0] + 0.587 * frames[..., 1] + 0.114 * frames[..., 2]


def flicker(frames: Sequence[np.ndarray] | np.ndarray, region: tuple[slice, slice] | None = None) -> float:
    """Mean absolute change of mean brightness (luma, 8-bit levels) between consecutive
    frames, over ``region`` (rows, columns) of (H, W, 3) frames: on static content, flicker."""
    stack = np.stack(list(frames))
    if region is not None:
        stack = stack[:, region[0], region[1]]
    means = _luma(stack).mean(axis=(1, 2))
    return float(np.abs(np.diff(means)).mean())


def temporal_psnr(
    frames: Sequence[np.ndarray] | np.ndarray, region: tuple[slice, slice] | None = None
) -> float:
    """PSNR (dB) between each 8-bit frame and the next over ``region``, from their mean squared
    difference over the whole clip (a mean of per-pair PSNRs would be ruled by the few
    near-identical pairs): higher is steadier; capped at 100 dB for identical frames."""
    stack = np.stack(list(frames)).astype(np.float64)
    if region is not None:
        stack = stack[:, region[0], region[1]]
    error = ((stack[1:] - stack[:-1]) ** 2).mean()
    return float(min(100.0, 10 * np.log10(255.0**2 / max(error, 1e-12))))
