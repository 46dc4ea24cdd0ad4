"""Scoring core of ``scripts/bench/bench_quality.py``: a model's perceptual loss on held-out photos relative to what
per-image optimisation (Gatys et al.) reaches on the same loss.

* :func:`load_photo` -- a photo as ``(1, 3, H, W)`` in ``[0, 1]``, long side ``size`` (Lanczos, EXIF-rotated).
* :class:`Scorer` -- the loss (bundled VGG16 + a :class:`LossConfig`, fp32, no autocast) with the painting's Gram
  targets; :meth:`Scorer.terms` gives the weighted content/style/tv terms of one image.
* :func:`optimise_photo` -- L-BFGS on the pixels, starting from the photo (the reference) or from noise (the loss
  after each evaluation: how many evaluations a model's output is worth); cached on disk by :class:`OptimisationCache`
  (key: photo bytes, painting bytes, loss config, size, L-BFGS settings, start, VGG weights).
* :func:`noise_equivalent` -- the first evaluation of the from-noise run at or below a model's loss.
* :class:`ModelContender` -- a model file applied with ``Stylizer.load(path, precision="fp32").apply(tensor)``.
* :func:`ratios` -- per-term ratios model / optimisation: mean over photos of per-photo ratios, and ratio of sums.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from stylize.config import LossConfig
from stylize.io.decoding import pixels_of, to_float
from stylize.io.resources import BUNDLED_SHA256, sha256_of
from stylize.training.data import load_style_image
from stylize.training.losses import PerceptualLoss
from stylize.training.vgg import BUNDLED_FILE, load_vgg16

TERMS = ("total", "content", "style", "tv")
#: Bump when the way photos are prepared or the optimisation runs changes, so old cache entries stop matching.
CACHE_VERSION = 1


def load_photo(path: Path, size: int) -> torch.Tensor:
    """``path`` as ``(1, 3, H, W)`` float32 in ``[0, 1]`` with ``max(H, W) == size`` (Lanczos; EXIF orientation)."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = size / max(image.size)
    image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))), Image.Resampling.LANCZOS)
    return to_float(pixels_of(image)).unsqueeze(0)


def save_strip(images: list[torch.Tensor], path: Path) -> None:
    """``(1, 3, H, W)`` images side by side as one PNG."""
    strip = torch.cat([image.detach().float().cpu().clamp(0, 1) for image in images], dim=3)[0]  # (3, H, n*W)
    pixels = strip.mul(255).round().byte().permute(1, 2, 0).contiguous().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


class Scorer:
    """The perceptual loss of training, in fp32, with one painting's Gram targets.

    The painting is read as training reads it (:func:`load_style_image`, long side ``loss.style_size``).
    """

    def __init__(self, painting: Path, loss: LossConfig) -> None:
        self.painting = Path(painting)
        self.loss_config = loss
        vgg = load_vgg16().to(memory_format=torch.channels_last)  # oneDNN's layout: 0.85 vs 1.5 s per 384x288 fwd+bwd
        self.loss = PerceptualLoss(vgg, loss)
        self.loss.set_styles([load_style_image(str(painting), loss.style_size)[1]])
        self._style_index = torch.zeros(1, dtype=torch.long)

    def __call__(self, image: torch.Tensor, photo: torch.Tensor):
        """Weighted :class:`LossTerms` of ``image`` against ``photo``, both ``(1, 3, H, W)`` in ``[0, 1]``."""
        layout = torch.channels_last
        return self.loss(image.contiguous(memory_format=layout), photo.contiguous(memory_format=layout), self._style_index)

    @torch.no_grad()
    def terms(self, image: torch.Tensor, photo: torch.Tensor) -> dict[str, float]:
        values = self(image, photo)
        terms = {"content": float(values.content), "style": float(values.style), "tv": float(values.tv)}
        return {"total": terms["content"] + terms["style"] + terms["tv"], **terms}


@dataclass(frozen=True)
class LbfgsSettings:
    """torch.optim.LBFGS on the pixels, starting from the photo; the loss is taken of ``clamp(x, 0, 1)``.

    ``steps`` is LBFGS's ``max_iter`` (iterations in one ``step()`` call); the strong-Wolfe line search may take
    several loss evaluations per iteration, at most ``max_eval = 1.25 * steps`` in all (torch's default).
    """

    steps: int = 100
    history_size: int = 100
    line_search: str = "strong_wolfe"
    lr: float = 1.0


#: Seed of the uniform noise the from-noise optimisation starts from.
NOISE_SEED = 0


def optimise_photo(scorer: Scorer, photo: torch.Tensor, settings: LbfgsSettings, from_noise: bool = False) -> tuple[torch.Tensor, dict]:
    """Per-image optimisation (Gatys et al.) from the photo, or from uniform noise: returns the clamped image and
    ``{"seconds", "iterations", "evaluations", "trace"}``, ``trace`` the total loss at every evaluation."""
    start = torch.rand(photo.shape, generator=torch.Generator().manual_seed(NOISE_SEED)) if from_noise else photo.clone()
    pixels = start.contiguous().requires_grad_(True)  # LBFGS flattens with view(): contiguous only
    optimizer = torch.optim.LBFGS(
        [pixels], lr=settings.lr, max_iter=settings.steps, history_size=settings.history_size,
        line_search_fn=settings.line_search,
    )
    trace: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        # Pixels outside [0, 1] get no gradient through the clamp: the optimiser sees exactly the image we keep.
        total = scorer(pixels.clamp(0, 1), photo).total
        total.backward()
        pixels.grad = pixels.grad.contiguous()  # it comes back channels-last, from the VGG's layout
        trace.append(float(total))
        return total.detach()

    started = time.perf_counter()
    optimizer.step(closure)
    seconds = time.perf_counter() - started
    iterations = int(optimizer.state[optimizer.param_groups[0]["params"][0]]["n_iter"])
    image = pixels.detach().clamp(0, 1).contiguous()
    return image, {"seconds": seconds, "iterations": iterations, "evaluations": len(trace), "trace": trace}


def noise_equivalent(trace: list[float], total: float) -> int | None:
    """How many evaluations of the from-noise optimisation a loss of ``total`` is worth: the first (1-based) at or
    below it; None when the run never gets there."""
    return next((index + 1 for index, value in enumerate(trace) if value <= total), None)


class OptimisationCache:
    """Per-image optimisation results on disk: ``<key>.pt`` (the fp32 image) and ``<key>.json`` (its terms, time).

    The key hashes everything the result depends on: photo and painting bytes, loss config, size, L-BFGS settings,
    the VGG16 weights and :data:`CACHE_VERSION`.
    """

    def __init__(self, folder: Path, scorer: Scorer, size: int, settings: LbfgsSettings, from_noise: bool = False) -> None:
        self.folder = Path(folder)
        self.scorer = scorer
        self.size = size
        self.settings = settings
        self.from_noise = from_noise
        self._painting_hash = sha256_of(Path(scorer.painting))

    def key(self, photo_path: Path) -> str:
        description = {
            "version": CACHE_VERSION,
            "photo_sha256": sha256_of(Path(photo_path)),
            "painting_sha256": self._painting_hash,
            "loss": dataclasses.asdict(self.scorer.loss_config),
            "size": self.size,
            "lbfgs": dataclasses.asdict(self.settings),
            "vgg_sha256": BUNDLED_SHA256[f"weights/{BUNDLED_FILE}"],
        }
        if self.from_noise:  # the photo-started entries keep the keys they had before this option existed
            description["start"] = f"noise, seed {NOISE_SEED}"
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, photo_path: Path, photo: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The optimised image and its record (terms, seconds, iterations, ``cached``), computing it if missing."""
        key = self.key(photo_path)
        image_file, record_file = self.folder / f"{key}.pt", self.folder / f"{key}.json"
        if image_file.is_file() and record_file.is_file():
            image = torch.load(image_file, weights_only=True)
            return image, {**json.loads(record_file.read_text()), "cached": True}
        image, run = optimise_photo(self.scorer, photo, self.settings, self.from_noise)
        record = {"photo": Path(photo_path).name, **run, "terms": self.scorer.terms(image, photo)}
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(image, image_file)
        record_file.write_text(json.dumps(record, indent=1))  # written last: its presence marks a complete entry
        return image, {**record, "cached": False}


@dataclass(frozen=True)
class ModelContender:
    """A model file scored as users run it: ``Stylizer.load(path, precision="fp32").apply(tensor, style=style)``.

    ``style`` ``None`` uses the model's default style. ``train_seconds``/``steps`` describe how it was made, if known.
    """

    label: str
    path: Path
    style: str | None = None
    train_seconds: float | None = None
    steps: int | None = None


def run_contender(contender: ModelContender, photos: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    """The contender's outputs for ``photos`` and the median seconds per photo of ``apply`` (after a warm-up call)."""
    from stylize.api import Stylizer

    stylizer = Stylizer.load(contender.path, precision="fp32")
    stylizer.apply(photos[0], style=contender.style)  # warm-up: the engine prepares its layers on first use
    outputs, seconds = [], []
    for photo in photos:
        started = time.perf_counter()
        outputs.append(stylizer.apply(photo, style=contender.style))
        seconds.append(time.perf_counter() - started)
    return outputs, statistics.median(seconds)


def ratios(model_terms: list[dict[str, float]], reference_terms: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per term: ``mean`` of per-photo ratios model / reference (each photo weighs the same), and ``of_sums``."""
    result = {}
    for term in TERMS:
        per_photo = [m[term] / r[term] for m, r in zip(model_terms, reference_terms, strict=True)]
        of_sums = sum(m[term] for m in model_terms) / sum(r[term] for r in reference_terms)
        result[term] = {"mean": statistics.fmean(per_photo), "of_sums": of_sums, "per_photo": per_photo}
    return result
