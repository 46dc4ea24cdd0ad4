"""Video frames through the per-image pipeline, stable from one frame to the next.

:class:`FrameStylizer` is the :class:`stylize.video.FrameProcessor` that ``stylize apply clip.mp4 out.mp4`` runs:
batches of consecutive frames go through :func:`stylize.pipeline.stages.stylize`, the same stage photos use. Per-frame
stylization flickers: instance norm normalises every frame by its own statistics, so a small change anywhere shifts
the whole frame's tone, and strokes are redrawn from scratch each frame. Two remedies, each optional:

- :class:`TemporalStatistics` carries every instance norm's statistics across frames: each layer normalises with a
  running mean of its per-channel mean and variance (weight ``momentum`` on the past), restarted at scene cuts. The
  engine's executors, tiles included, call it at every normalised layer (:class:`stylize.network.topology.NormStatistics`).
- :class:`PhaseLock` keeps a panning shot's content at the same place relative to the network's stride grid. The
  generator halves the resolution twice, so it draws a picture moved by 1-3 pixels with other strokes than the
  picture itself; moved by a multiple of 4 it draws the same strokes, moved. Each frame is shifted by 0-3 pixels
  (reflected border) so that the content's accumulated motion is a multiple of 4, and the result shifted back.
- :class:`FlowBlend` carries the previous stylized frame, warped along the motion between the *input* frames, into
  the new one in the gradient domain (after Bonneel et al., "Blind video temporal consistency", 2015): the result
  keeps the new frame's second derivatives, its strokes, and takes the rest of the difference to the warped previous
  frame, a screened solve applied as a low-pass filter. Pixels where the warped previous input does not match the
  current one (occlusions, failed motion) are not carried over. A plain blend of the two frames, measured too,
  smears the strokes (the style loss rose 1.5x for half the flicker; scripts/bench/bench_video.py).

Both take the motion from :class:`Motion` (OpenCV's DIS optical flow between consecutive input frames). A scene cut
(the small grey thumbnails of two frames differ by more than ``scene_cut``) restarts everything. All state is saved
at segment ends (:meth:`FrameStylizer.state_dict`), so a resumed run gives the same frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from stylize.config import ApplyOptions, TemporalOptions
from stylize.engine import Engine
from stylize.io import quantize
from stylize.network import SIZE_MULTIPLE, check_size, padded_size
from stylize.pipeline import stages
from stylize.pipeline.stages import StyleWeights

#: Side of the grey thumbnails compared to find scene cuts.
THUMBNAIL = 32
#: Longest side at which motion is estimated (the flow is scaled up to larger frames). Up to 720p the flow runs at the
#: frame's own size: a half-size flow's errors, doubled, cost HD frames style and steadiness; above it, time grows faster.
FLOW_SIDE = 1280
#: OpenCV's DIS optical flow preset: the finer ones cost more at HD for little steadiness (docs/benchmarks/video.md).
FLOW_PRESET = "ULTRAFAST"
#: DIS optical flow refuses frames with neither side this long.
FLOW_MIN_SIDE = 12
#: OpenCV's remap addresses pixels with 16-bit integers: frames with a side this long or longer warp with torch.
REMAP_SIDE_LIMIT = 32767


def grey(frame: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` uint8 RGB -> ``(h, w)`` uint8 luma (BT.601), scaled down by area to at most :data:`FLOW_SIDE`."""
    import cv2  # the video extra brings it: pip install 'stylize[video]'

    height, width = frame.shape[1:]
    luma = cv2.cvtColor(_channels_last(frame), cv2.COLOR_RGB2GRAY)
    scale = min(1.0, FLOW_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        luma = cv2.resize(luma, size, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(luma)


def _channels_last(frame: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` uint8 -> ``(H, W, 3)`` contiguous array, OpenCV's layout (no copy for decoded frames, which are
    views of one)."""
    return np.ascontiguousarray(frame.permute(1, 2, 0).cpu().numpy())


def thumbnail(luma: torch.Tensor) -> torch.Tensor:
    """``(h, w)`` uint8 grey -> ``(THUMBNAIL, THUMBNAIL)`` float in ``[0, 1]``."""
    return F.adaptive_avg_pool2d(luma[None, None].float(), THUMBNAIL)[0, 0].div_(255.0)


class TemporalStatistics:
    """Running per-layer instance-norm statistics over frames (a :class:`stylize.network.topology.NormStatistics` hook).

    Frame ``t`` of a layer normalises with ``m_t = momentum * m_{t-1} + (1 - momentum) * mean_t`` (and the same for the
    variance); at a scene cut, and on the first frame, ``m_t = mean_t``. :meth:`begin` gives the cut flags of the next
    batch; the hook takes rows in order, whether a layer sees the whole batch at once or one image at a time (tiles).
    """

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cuts: list[bool] = []
        self._position: dict[str, int] = {}

    def begin(self, cuts: list[bool]) -> None:
        self._cuts, self._position = list(cuts), {}

    def __call__(self, name: str, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = self._position.get(name, 0)
        self._position[name] = start + mean.shape[0]
        previous = self.state.get(name)
        means, variances = [], []
        for row in range(mean.shape[0]):
            m, v = mean[row].float(), var[row].float()
            cut = self._cuts[start + row] if start + row < len(self._cuts) else False
            if previous is not None and not cut:
                m = torch.lerp(m, previous[0].to(m.device), self.momentum)
                v = torch.lerp(v, previous[1].to(v.device), self.momentum)
            previous = (m, v)
            means.append(m)
            variances.append(v)
        self.state[name] = previous  # type: ignore[assignment]
        return torch.stack(means), torch.stack(variances)


class Flow:
    """Dense motion from one frame to the previous, estimated on grey copies of at most :data:`FLOW_SIDE`:
    ``field`` ``(h, w, 2)`` float32 says, in those copies' pixels, where each pixel of this frame was in the previous
    one."""

    def __init__(self, field: np.ndarray, size: tuple[int, int], luma: torch.Tensor, previous_luma: torch.Tensor) -> None:
        self.field, self.size = field, size
        self.luma, self.previous_luma = luma, previous_luma

    def content_shift(self) -> tuple[float, float]:
        """How far the picture as a whole moved since the previous frame, ``(x, y)`` in frame pixels (the median
        motion, of every other pixel each way or sparser on large flows: a pan or a shaking hand, not a moving subject)."""
        height, width = self.size
        h, w = self.field.shape[:2]
        step = max(2, max(h, w) // 320)
        median = np.median(self.field[::step, ::step].reshape(-1, 2), axis=0)
        return -float(median[0]) * width / w, -float(median[1]) * height / h

    def warp(self, previous: np.ndarray) -> np.ndarray:
        """A ``(h, w, C)`` float32 image of the previous frame (at any scale) moved along the motion onto this frame, at
        the same scale, edges repeated; bicubic, because a bilinear warp's blur builds up from frame to frame in what the
        blend carries over."""
        return _remap(previous, self.field, previous.shape[:2], cubic=True)

    def mismatch(self) -> np.ndarray:
        """``(h, w)`` float32 in ``[0, 1]``: how far each grey pixel is from the previous grey frame moved along the
        motion: large where the motion is wrong or something came into view."""
        previous = self.previous_luma.numpy().astype(np.float32)
        warped = _remap(previous, self.field, previous.shape, cubic=False)
        return np.abs(warped - self.luma.numpy()) * np.float32(1 / 255)


def _remap(image: np.ndarray, field: np.ndarray, size: tuple[int, int], cubic: bool) -> np.ndarray:
    """``image`` (H, W[, C]) float32 sampled at every pixel of an ``size`` (H, W) frame plus ``field`` (h, w, 2), the
    displacement in pixels of an (h, w) copy, scaled up to the frame; bicubic or bilinear, edges repeated."""
    import cv2

    height, width = size
    h, w = field.shape[:2]
    maps = []
    columns, rows = np.arange(width, dtype=np.float32)[None, :], np.arange(height, dtype=np.float32)[:, None]
    for axis, (length, small, coordinates) in enumerate(((width, w, columns), (height, h, rows))):
        component = np.ascontiguousarray(field[..., axis]) * np.float32(length / small)  # scaled where it is small
        if (h, w) != (height, width):
            component = cv2.resize(component, (width, height), interpolation=cv2.INTER_LINEAR)
        maps.append(np.add(component, coordinates, out=component))
    if max(*image.shape[:2], height, width) >= REMAP_SIDE_LIMIT:
        # grid_sample's [-1, 1] coordinates of pixel centres (align_corners=False); the same bicubic kernel (a = -0.75)
        grid = torch.from_numpy(np.stack(maps, axis=-1))
        grid = (grid + 0.5).mul_(torch.tensor([2 / image.shape[1], 2 / image.shape[0]])).sub_(1.0)
        pixels = torch.from_numpy(image).reshape(*image.shape[:2], -1).permute(2, 0, 1)[None]
        warped = F.grid_sample(pixels, grid[None], mode="bicubic" if cubic else "bilinear", padding_mode="border", align_corners=False)
        return warped[0].permute(1, 2, 0).reshape(height, width, *image.shape[2:]).contiguous().numpy()
    interpolation = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    return cv2.remap(image, maps[0], maps[1], interpolation, borderMode=cv2.BORDER_REPLICATE).reshape(height, width, *image.shape[2:])


class Motion:
    """The motion between consecutive input frames: OpenCV's DIS optical flow on grey copies (:func:`grey`)."""

    def __init__(self) -> None:
        import cv2  # the video extra brings it: pip install 'stylize[video]'

        self.flow = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{FLOW_PRESET}"))
        self.previous: torch.Tensor | None = None  # (h, w) uint8 grey of the previous frame

    def __call__(self, luma: torch.Tensor, size: tuple[int, int], cut: bool) -> Flow | None:
        """``luma``, the :func:`grey` copy of a frame of ``size`` (H, W) -> its motion from the previous frame; None
        at a cut, a change of size, or in frames too small for DIS."""
        previous, self.previous = self.previous, luma
        if cut or previous is None or previous.shape != luma.shape or max(luma.shape) < FLOW_MIN_SIDE:
            return None
        return Flow(self.flow.calc(luma.numpy(), previous.numpy(), None), size, luma, previous)


class PhaseLock:
    """Shifts of 0 to ``SIZE_MULTIPLE - 1`` pixels that keep the content's accumulated motion a multiple of
    :data:`~stylize.network.topology.SIZE_MULTIPLE`, the network's stride grid."""

    def __init__(self) -> None:
        self.offset = torch.zeros(2, dtype=torch.float64)  # (x, y): how far the content moved since the scene began

    def __call__(self, flow: Flow | None) -> tuple[int, int]:
        """``(x, y)`` to shift the frame by (right, down) before the network, and back after."""
        if flow is None:
            self.offset.zero_()
        else:
            self.offset += torch.tensor(flow.content_shift(), dtype=torch.float64)
        x, y = (int(-round(value)) % SIZE_MULTIPLE for value in self.offset.tolist())
        return x, y


def shift(frame: torch.Tensor, x: int, y: int) -> torch.Tensor:
    """``frame`` (3, H, W) uint8 moved ``x`` right and ``y`` down inside a reflected border, every shift giving the same
    size (the frame's padded size with room for the largest shift), so that frames batch together as they run alone."""
    import cv2

    height, width = frame.shape[1:]
    padded_height, padded_width = padded_size(height + SIZE_MULTIPLE - 1, width + SIZE_MULTIPLE - 1)
    # REFLECT_101 is torch's "reflect": the edge pixel is not repeated
    moved = cv2.copyMakeBorder(_channels_last(frame), y, padded_height - height - y, x, padded_width - width - x, cv2.BORDER_REFLECT_101)
    return torch.from_numpy(moved).permute(2, 0, 1)


class FlowBlend:
    """Carries the previous output, warped along the input frames' motion, into each new stylized frame.

    The result ``u`` keeps the new frame ``S``'s second derivatives (its strokes) and takes the rest from the warped
    previous output ``P`` where the motion is trusted: it minimises ``w^2 |u - P|^2 + |laplacian(u - S)|^2``, whose
    solution is ``u = S + w^2 / (w^2 + k^4) (P - S)`` at spatial frequency ``k``. That low-pass filter is applied as
    ``2 G - G G`` with ``G`` a Gaussian blur (:func:`low_pass`: its response is within 0.05 of the exact one at every
    frequency, cheaper than an FFT, and reflects at the borders instead of wrapping). Keeping the gradients
    instead (Bonneel et al.'s ``w / (w + k^2)``) averages more of the strokes' band with the previous frame's: as
    steady, but further from the style (docs/benchmarks/video.md).

    The blend works on a grid ``scale`` times the frame's size. The carried difference is a low-pass image (at
    ``strength`` 1, under 15% of it passes above half the frame's Nyquist frequency), so a half-size grid holds most
    of it at a quarter of the warp's and the filter's cost; what it drops makes the result a little less steady
    (docs/benchmarks/video.md).
    """

    def __init__(self, strength: float, tolerance: float, scale: float = 1.0) -> None:
        """``strength``: ``w``, the squared frequency (radians per pixel) at which half the difference to the warped
        previous frame is carried over; ``tolerance``: the grey mismatch at which none of it is; ``scale``: the
        blend's grid, relative to the frame."""
        self.sigma = math.sqrt(2 * math.log(2 + math.sqrt(2)) / strength)  # where 1 - (1 - G)^2 carries half
        self.tolerance = tolerance
        self.scale = scale
        self.previous: np.ndarray | None = None  # (h, w, 3) float32 in [0, 1]: what was written, on the blend's grid

    def __call__(self, stylized: torch.Tensor, flow: Flow | None) -> torch.Tensor:
        """``stylized`` (3, H, W) float32 result of a frame, ``flow`` the frame's motion (None: a new scene) -> the
        blended result, (3, H, W)."""
        import cv2

        current = stylized.cpu().permute(1, 2, 0).contiguous().numpy()  # (H, W, 3), OpenCV's layout: torch's copy is faster than numpy's
        height, width = current.shape[:2]
        grid = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
        whole = grid == (height, width)
        small = current if whole else cv2.resize(current, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
        previous = self.previous
        if flow is not None and previous is not None and previous.shape == small.shape:
            trust = np.clip(1.0 - flow.mismatch() / np.float32(self.tolerance), 0.0, 1.0)
            if trust.shape != grid:
                trust = cv2.resize(trust, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR)
            difference = flow.warp(previous)
            difference -= small
            difference *= trust[..., None]
            carried = low_pass(difference, self.sigma * grid[1] / width)
            small += carried  # in place: ``current`` itself when whole
            np.clip(small, 0.0, 1.0, out=small)
            if not whole:
                current += cv2.resize(carried, (width, height), interpolation=cv2.INTER_CUBIC)
                np.clip(current, 0.0, 1.0, out=current)
        self.previous = small
        return torch.from_numpy(current).permute(2, 0, 1)


def low_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` (H, W[, C]) float32 through ``1 - (1 - G)^2 = 2 G - G G``, ``G`` a Gaussian blur of ``sigma`` pixels:
    flat like ``1 / (1 + k^4)`` at low frequencies, where a single Gaussian already bends down."""
    import cv2

    once = cv2.GaussianBlur(image, (0, 0), sigma)
    twice = cv2.GaussianBlur(once, (0, 0), sigma)
    return cv2.addWeighted(once, 2.0, twice, -1.0, 0.0)


@dataclass
class FrameStylizer:
    """Runs batches of video frames through the pipeline; a :class:`stylize.video.FrameProcessor`.

    ``temporal`` None stylizes every frame on its own. Returns ``(3, H, W)`` uint8 frames.
    """

    engine: Engine
    weights: StyleWeights
    options: ApplyOptions
    temporal: TemporalOptions | None = None

    #: What :meth:`state_dict` holds and how it is used: an interrupted run saved with another cannot be continued.
    STATE_VERSION: ClassVar[int] = 3

    def __post_init__(self) -> None:
        temporal = self.temporal
        self.statistics = TemporalStatistics(temporal.momentum) if temporal and temporal.momentum > 0 else None
        self.blend = (
            FlowBlend(temporal.flow_strength, temporal.flow_tolerance, temporal.blend_scale)
            if temporal is not None and temporal.flow_strength > 0
            else None
        )
        self.lock = PhaseLock() if temporal and temporal.phase_lock else None
        self.motion = Motion() if self.blend is not None or self.lock is not None else None
        self.previous_thumbnail: torch.Tensor | None = None

    @staticmethod
    def check_frames(height: int, width: int) -> None:
        """Refuse frames the network cannot take, by their own size (the phase lock pads them before the network)."""
        check_size(height, width, what="video frames are")

    def __call__(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        self.check_frames(*frames[0].shape[1:])
        if self.temporal is None:
            results = stages.stylize(self.engine, frames, self.weights, self.options)
            return [quantize(result).permute(2, 0, 1) for result in results]  # (3, H, W) views of (H, W, 3) uint8
        lumas = [grey(frame) for frame in frames]
        cuts = self._cuts(lumas)
        height, width = frames[0].shape[1:]
        motion = self.motion
        flows = [motion(luma, (height, width), cut) for luma, cut in zip(lumas, cuts, strict=True)] if motion else [None] * len(frames)
        # The lock works in the network's pixels: not when work_size makes the network paint a smaller copy.
        locked = (
            self.lock is not None
            and min(height, width) > SIZE_MULTIPLE
            and not (self.options.work_size and self.options.work_size < max(height, width))
        )
        shifts = [self.lock(flow) if locked else (0, 0) for flow in flows]  # type: ignore[misc]
        inputs = [shift(frame, x, y) for frame, (x, y) in zip(frames, shifts, strict=True)] if locked else frames
        if self.statistics is not None:
            self.statistics.begin(cuts)
        results = stages.stylize(self.engine, inputs, self.weights, self.options, statistics=self.statistics)
        out = []
        for result, flow, (x, y) in zip(results, flows, shifts, strict=True):
            result = result[:, y : y + height, x : x + width]
            if self.blend is not None:
                result = self.blend(result, flow)
            out.append(quantize(result).permute(2, 0, 1))
        return out

    def _cuts(self, lumas: list[torch.Tensor]) -> list[bool]:
        """Whether each frame starts a new scene (the first frame of the clip does), from its grey copy."""
        cuts = []
        for luma in lumas:
            small = thumbnail(luma)
            previous = self.previous_thumbnail
            cuts.append(previous is None or (small - previous).abs().mean().item() > self.temporal.scene_cut)  # type: ignore[union-attr]
            self.previous_thumbnail = small
        return cuts

    # -- resumable state ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        if self.previous_thumbnail is not None:
            state["thumbnail"] = self.previous_thumbnail
        if self.statistics is not None:
            for name, (mean, var) in self.statistics.state.items():
                state[f"statistics.{name}.mean"], state[f"statistics.{name}.var"] = mean.cpu(), var.cpu()
        if self.blend is not None and self.blend.previous is not None:
            state["blend.output"] = torch.from_numpy(self.blend.previous)
        if self.motion is not None and self.motion.previous is not None:
            state["motion.previous"] = self.motion.previous
        if self.lock is not None:
            state["lock.offset"] = self.lock.offset
        return {key: value.contiguous() for key, value in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.previous_thumbnail = state.get("thumbnail")
        if self.statistics is not None:
            names = {key[len("statistics.") : -len(".mean")] for key in state if key.startswith("statistics.") and key.endswith(".mean")}
            self.statistics.state = {name: (state[f"statistics.{name}.mean"], state[f"statistics.{name}.var"]) for name in names}
        if self.blend is not None:
            output = state.get("blend.output")
            self.blend.previous = None if output is None else output.numpy()
        if self.motion is not None:
            self.motion.previous = state.get("motion.previous")
        if self.lock is not None and "lock.offset" in state:
            self.lock.offset = state["lock.offset"].clone()
