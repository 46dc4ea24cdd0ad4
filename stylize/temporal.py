"""Video frames through the per-image pipeline, stable from one frame to the next.

:class:`FrameStylizer` is the :class:`stylize.video.FrameProcessor` that ``stylize apply clip.mp4 out.mp4`` runs:
batches of consecutive frames go through :func:`stylize.pipeline.stylize`, the same stage photos use. Per-frame
stylization flickers: instance norm normalises every frame by its own statistics, so a small change anywhere shifts
the whole frame's tone, and strokes are redrawn from scratch each frame. Two remedies, each optional:

- :class:`TemporalStatistics` carries every instance norm's statistics across frames: each layer normalises with a
  running mean of its per-channel mean and variance (weight ``momentum`` on the past), restarted at scene cuts. The
  engine's executors, tiles included, call it at every normalised layer (:class:`stylize.topology.NormStatistics`).
- :class:`PhaseLock` keeps a panning shot's content at the same place relative to the network's stride grid. The
  generator halves the resolution twice, so it draws a picture moved by 1-3 pixels with other strokes than the
  picture itself; moved by a multiple of 4 it draws the same strokes, moved. Each frame is shifted by 0-3 pixels
  (reflected border) so that the content's accumulated motion is a multiple of 4, and the result shifted back.
- :class:`FlowBlend` carries the previous stylized frame, warped along the motion between the *input* frames, into
  the new one in the gradient domain (Bonneel et al., "Blind video temporal consistency", 2015): the result keeps the
  new frame's finest detail and takes the rest of the difference to the warped previous frame, a screened Poisson
  solve done by FFT. Pixels where the warped previous input does not match the current one (occlusions, failed
  motion) are not carried over. A plain blend of the two frames, measured too, smears the strokes (the style loss
  rose 1.5x for half the flicker; scripts/bench_video.py).

Both take the motion from :class:`Motion` (OpenCV's DIS optical flow between consecutive input frames). A scene cut
(the small grey thumbnails of two frames differ by more than ``scene_cut``) restarts everything. All state is saved
at segment ends (:meth:`FrameStylizer.state_dict`), so a resumed run gives the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylize import pipeline
from stylize.blending import luminance
from stylize.config import ApplyOptions, TemporalOptions
from stylize.decoding import to_float
from stylize.encoding import quantize
from stylize.engine import Engine
from stylize.pipeline import StyleWeights
from stylize.topology import SIZE_MULTIPLE, padded_size

#: Side of the grey thumbnails compared to find scene cuts.
THUMBNAIL = 32
#: Longest side at which motion is estimated (the flow is scaled up to the frame): finer adds time, not accuracy.
FLOW_SIDE = 640


def thumbnail(frame: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> ``(THUMBNAIL, THUMBNAIL)`` float grey in ``[0, 1]``."""
    grey = luminance(to_float(frame)[None])  # (1, 1, H, W)
    return F.adaptive_avg_pool2d(grey, THUMBNAIL)[0, 0]


class TemporalStatistics:
    """Running per-layer instance-norm statistics over frames (a :class:`stylize.topology.NormStatistics` hook).

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
    """Dense motion from one frame to the previous: ``field`` ``(h, w, 2)``, in pixels of a grey copy of at most
    :data:`FLOW_SIDE`, says where each pixel of this frame was in the previous one."""

    def __init__(self, field: torch.Tensor, size: tuple[int, int]) -> None:
        self.field, self.size = field, size

    def content_shift(self) -> tuple[float, float]:
        """How far the picture as a whole moved since the previous frame, ``(x, y)`` in frame pixels (the median
        motion: a pan or a shaking hand, not a moving subject)."""
        height, width = self.size
        median = self.field.reshape(-1, 2).median(dim=0).values
        return -median[0].item() * width / self.field.shape[1], -median[1].item() * height / self.field.shape[0]

    def grid(self) -> torch.Tensor:
        """``grid_sample`` coordinates ``(1, H, W, 2)`` in ``[-1, 1]``: where each frame pixel was in the previous frame."""
        height, width = self.size
        flow = F.interpolate(self.field.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        flow[0] *= width / self.field.shape[1]
        flow[1] *= height / self.field.shape[0]
        ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
        x = (xs + flow[0] + 0.5) / width * 2 - 1
        y = (ys + flow[1] + 0.5) / height * 2 - 1
        return torch.stack([x, y], dim=-1)[None]


class Motion:
    """The motion between consecutive input frames: OpenCV's DIS optical flow on grey copies."""

    def __init__(self) -> None:
        import cv2  # the video extra brings it: pip install 'stylize[video]'

        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self.previous: torch.Tensor | None = None  # (h, w) uint8 grey of the previous frame

    def __call__(self, frame: torch.Tensor, cut: bool) -> Flow | None:
        """``frame`` (3, H, W) uint8 -> its motion from the previous frame; None at a cut or a change of size."""
        height, width = frame.shape[1:]
        scale = min(1.0, FLOW_SIDE / max(height, width))
        size = (max(8, round(height * scale)), max(8, round(width * scale)))
        grey = F.interpolate(luminance(to_float(frame)[None].cpu()), size=size, mode="area")[0, 0].mul(255).round_().to(torch.uint8)
        previous, self.previous = self.previous, grey
        if cut or previous is None or previous.shape != grey.shape:
            return None
        return Flow(torch.from_numpy(self.flow.calc(grey.numpy(), previous.numpy(), None)), (height, width))


class PhaseLock:
    """Shifts of 0 to ``SIZE_MULTIPLE - 1`` pixels that keep the content's accumulated motion a multiple of
    :data:`~stylize.topology.SIZE_MULTIPLE`, the network's stride grid."""

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
    height, width = frame.shape[1:]
    padded_height, padded_width = padded_size(height + SIZE_MULTIPLE - 1, width + SIZE_MULTIPLE - 1)
    padding = (x, padded_width - width - x, y, padded_height - height - y)
    return F.pad(frame[None].float(), padding, mode="reflect")[0].to(torch.uint8)  # no reflect pad for uint8; exact


class FlowBlend:
    """Carries the previous output, warped along the input frames' motion, into each new stylized frame."""

    def __init__(self, strength: float, tolerance: float) -> None:
        """``strength``: the screening weight ``w``: the difference to the warped previous frame is kept at spatial
        frequency ``k`` (radians per pixel) by ``w / (w + k^2)``, so a larger strength carries finer detail over."""
        self.strength = strength
        self.tolerance = tolerance
        self._filters: dict[tuple[int, int], torch.Tensor] = {}
        self.previous_input: torch.Tensor | None = None  # (3, H, W) float in [0, 1]
        self.previous_output: torch.Tensor | None = None  # (3, H, W) float in [0, 1], what was written

    def __call__(self, frame: torch.Tensor, stylized: torch.Tensor, flow: Flow | None) -> torch.Tensor:
        """``frame`` (3, H, W) uint8 input, ``stylized`` (3, H, W) float result, ``flow`` its motion (None: a new
        scene) -> the blended result."""
        current = to_float(frame).cpu()
        previous_in, previous_out = self.previous_input, self.previous_output
        if flow is not None and previous_in is not None and previous_out is not None and previous_out.shape == stylized.shape:
            grid = flow.grid()
            warped_in = F.grid_sample(previous_in[None], grid, align_corners=False, padding_mode="border")[0]
            warped_out = F.grid_sample(previous_out[None], grid, mode="bicubic", align_corners=False, padding_mode="border")[0]
            mismatch = (warped_in - current).abs().mean(0, keepdim=True)  # (1, H, W)
            trust = (1.0 - mismatch / self.tolerance).clamp_(0.0, 1.0)
            size = stylized.shape[1:]
            difference = torch.fft.rfft2((warped_out - stylized) * trust)  # (3, H, W // 2 + 1)
            stylized = (stylized + torch.fft.irfft2(difference * self._filter(size), s=size)).clamp_(0.0, 1.0)
        self.previous_input, self.previous_output = current, stylized
        return stylized

    def _filter(self, size: tuple[int, int]) -> torch.Tensor:
        """``w / (w + k^2)`` on the ``rfft2`` grid of an ``(H, W)`` image (cached per size)."""
        if size not in self._filters:
            fy = torch.fft.fftfreq(size[0])[:, None]
            fx = torch.fft.rfftfreq(size[1])[None, :]
            squared = (2 * torch.pi) ** 2 * (fx**2 + fy**2)
            self._filters[size] = self.strength / (self.strength + squared)
        return self._filters[size]


@dataclass
class FrameStylizer:
    """Runs batches of video frames through the pipeline; a :class:`stylize.video.FrameProcessor`.

    ``temporal`` None stylizes every frame on its own. Returns ``(3, H, W)`` uint8 frames.
    """

    engine: Engine
    weights: StyleWeights
    options: ApplyOptions
    temporal: TemporalOptions | None = None

    def __post_init__(self) -> None:
        temporal = self.temporal
        self.statistics = TemporalStatistics(temporal.momentum) if temporal and temporal.momentum > 0 else None
        self.blend = FlowBlend(temporal.flow_strength, temporal.flow_tolerance) if temporal and temporal.flow_strength > 0 else None
        self.lock = PhaseLock() if temporal and temporal.phase_lock else None
        self.motion = Motion() if self.blend is not None or self.lock is not None else None
        self.previous_thumbnail: torch.Tensor | None = None

    def __call__(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        cuts = self._cuts(frames)
        flows = [self.motion(frame, cut) for frame, cut in zip(frames, cuts, strict=True)] if self.motion else [None] * len(frames)
        height, width = frames[0].shape[1:]
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
        results = pipeline.stylize(self.engine, inputs, self.weights, self.options, statistics=self.statistics)
        out = []
        for frame, result, flow, (x, y) in zip(frames, results, flows, shifts, strict=True):
            result = result[:, y : y + height, x : x + width]
            if self.blend is not None:
                result = self.blend(frame, result, flow)
            out.append(quantize(result).permute(2, 0, 1))  # (3, H, W) view of (H, W, 3) uint8
        return out

    def _cuts(self, frames: list[torch.Tensor]) -> list[bool]:
        """Whether each frame starts a new scene (the first frame of the clip does)."""
        cuts = []
        for frame in frames:
            small = thumbnail(frame)
            previous = self.previous_thumbnail
            threshold = self.temporal.scene_cut if self.temporal else 0.0
            cuts.append(previous is None or (small - previous).abs().mean().item() > threshold)
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
        if self.blend is not None and self.blend.previous_input is not None:
            state["blend.input"], state["blend.output"] = self.blend.previous_input, self.blend.previous_output  # type: ignore[assignment]
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
            self.blend.previous_input, self.blend.previous_output = state.get("blend.input"), state.get("blend.output")
        if self.motion is not None:
            self.motion.previous = state.get("motion.previous")
        if self.lock is not None and "lock.offset" in state:
            self.lock.offset = state["lock.offset"].clone()
