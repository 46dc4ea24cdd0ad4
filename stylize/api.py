"""The Python API: load a style model once, apply it to images, PIL images, tensors or files.

>>> from stylize import Stylizer
>>> stylizer = Stylizer.load()                      # bundled default model, best device
>>> stylizer.apply("photo.jpg", style="19").save("out.jpg")
>>> stylizer.apply("photo.jpg", mix={"3": 0.5, "12": 0.5}, strength=0.8)
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from stylize import imaging, tiling
from stylize.blending import blend, preserve_color
from stylize.catalog import find_model
from stylize.config import ImageConfig
from stylize.engine import Engine, resolve_device, resolve_precision
from stylize.errors import StylizeError
from stylize.modelfile import StyleModel, load_model
from stylize.network import MIN_SIDE

ImageInput = str | os.PathLike | Image.Image | torch.Tensor
MixSpec = str | dict[str | int, float]
STDIO = "-"


@dataclass(frozen=True)
class ApplyResult:
    """What one ``apply_file`` call did; the CLI prints it (``--json``)."""

    input: str
    output: str
    size: tuple[int, int]
    model: str
    style: str
    device: str
    precision: str
    seconds: float
    frames: int = 1  # frames or pages in the input; only the first is stylized

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "size": list(self.size),
            "model": self.model,
            "style": self.style,
            "device": self.device,
            "precision": self.precision,
            "seconds": round(self.seconds, 4),
            "frames": self.frames,
        }


class Stylizer:
    """A style model prepared for one device and precision."""

    def __init__(self, model: StyleModel, engine: Engine, name: str) -> None:
        self.model = model
        self.engine = engine
        self.name = name

    @classmethod
    def load(
        cls, model: str | os.PathLike | None = None, device: str = "auto", precision: str = "auto", compile: str = "auto"
    ) -> Stylizer:
        """Load ``model`` (a name or path; ``None`` = the bundled default) onto ``device`` in ``precision``.

        ``compile``: ``auto`` compiles an input size with ``torch.compile`` once it has run long enough to repay the
        compile (CUDA graphs on CUDA); ``always`` compiles every size on first use; ``never`` stays eager.
        """
        path = find_model(None if model is None else str(model))
        style_model = load_model(path)
        torch_device = resolve_device(device)
        chosen = resolve_precision(precision, torch_device, style_model.precision)
        return cls(style_model, Engine(style_model.generator, torch_device, chosen, compile=compile), path.stem)

    @property
    def styles(self) -> list[str]:
        return list(self.model.styles)

    @property
    def device(self) -> str:
        return str(self.engine.device)

    @property
    def precision(self) -> str:
        return self.engine.precision

    # -- styles ---------------------------------------------------------------------------------------------

    def style_index(self, style: str | int) -> int:
        """Index of a style given by name or by index (``"19"``, ``19`` or ``"starry_night"``)."""
        styles = self.model.styles
        text = str(style).strip()
        if text in styles:
            return styles.index(text)
        if text.lstrip("-").isdigit():
            index = int(text)
            if 0 <= index < len(styles):
                return index
            raise StylizeError(
                f"style index {index} is out of range for model '{self.name}'",
                f"use 0 to {len(styles) - 1}, or a name from 'stylize models'",
            )
        close = difflib.get_close_matches(text, styles, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"styles of '{self.name}': {', '.join(styles[:30])}"
        raise StylizeError(f"unknown style '{text}' for model '{self.name}'", hint)

    def style_weights(self, style: str | int | None = None, mix: MixSpec | None = None) -> torch.Tensor:
        """The ``(num_styles,)`` weight vector for one style or a convex mix of styles (normalised to sum 1)."""
        num_styles = len(self.model.styles)
        weights = torch.zeros(num_styles)
        if style is not None and mix is not None:
            raise StylizeError("give either a style or a mix, not both", "use --style NAME or --mix A:0.5,B:0.5")
        if mix is not None:
            for key, value in _parse_mix(mix).items():
                weights[self.style_index(key)] += value
            total = float(weights.sum())
            if total <= 0:
                raise StylizeError("mix weights add up to zero", "give at least one positive weight, e.g. 3:0.5,12:0.5")
            return weights / total
        if style is None:
            style = self.model.default_style if self.model.default_style is not None else 0
        weights[self.style_index(style)] = 1.0
        return weights

    def describe_style(self, style: str | int | None, mix: MixSpec | None) -> str:
        weights = self.style_weights(style, mix)
        parts = [f"{self.model.styles[i]}:{weights[i]:.3g}" for i in torch.nonzero(weights).flatten().tolist()]
        return parts[0].split(":")[0] if len(parts) == 1 else ",".join(parts)

    # -- applying ---------------------------------------------------------------------------------------------

    def apply_tensor(
        self,
        images: torch.Tensor,
        style: str | int | None = None,
        mix: MixSpec | None = None,
        strength: float = 1.0,
        preserve_colors: bool = False,
        tile: str | int = "auto",
        memory_limit: str | int | None = None,
    ) -> torch.Tensor:
        """Stylize ``(B, 3, H, W)`` or ``(3, H, W)`` float images in ``[0, 1]``; returns the same shape, float32.

        ``tile`` is ``"auto"`` (whole image when it fits ``memory_limit`` or the free memory, exact streaming in
        tiles otherwise), ``"off"`` or a tile side in pixels; ``memory_limit`` is bytes or a size like ``"2GB"``.
        """
        _check_strength(strength)
        if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4) or images.shape[-3] != 3:
            raise StylizeError("image tensors must have shape (3, H, W) or (B, 3, H, W)", "convert the image to RGB first")
        batched = images if images.dim() == 4 else images.unsqueeze(0)
        height, width = batched.shape[-2:]
        if min(height, width) < MIN_SIDE:
            raise StylizeError(
                f"image is too small ({width}x{height}); style transfer needs at least {MIN_SIDE} pixels on each side",
                "use a larger image",
            )
        photo = batched.detach().float().cpu()
        weights = self.style_weights(style, mix)
        stylized = tiling.forward(self.engine, photo, weights, tile=tile, memory_limit=memory_limit)
        if preserve_colors:
            stylized = preserve_color(stylized, photo)
        result = blend(stylized, photo, strength)
        return result if images.dim() == 4 else result[0]

    def apply(
        self,
        image: ImageInput,
        style: str | int | None = None,
        mix: MixSpec | None = None,
        strength: float = 1.0,
        preserve_color: bool = False,
        max_size: int | None = None,
        max_pixels: int = ImageConfig.max_pixels,
        tile: str | int = "auto",
        memory_limit: str | int | None = None,
    ) -> Image.Image | torch.Tensor:
        """Stylize a path or PIL image (returns a PIL image) or a tensor (returns a tensor).

        Alpha is kept and re-attached; a greyscale photo stays greyscale only with ``preserve_color``.
        ``max_size`` caps the long side (the result keeps the reduced size).
        """
        if isinstance(image, torch.Tensor):
            return self.apply_tensor(image, style, mix, strength, preserve_color, tile, memory_limit)
        tiling.parse_tile(tile)  # bad values fail before any work
        tiling.parse_memory_size(memory_limit)
        loaded = imaging.open_image(image, max_pixels=max_pixels)
        stylized = self._apply_loaded(loaded, style, mix, strength, preserve_color, max_size, tile, memory_limit)
        return imaging.finish_image(stylized, _resized(loaded, stylized.size), "PNG", keep_greyscale=preserve_color and loaded.is_greyscale)

    def _apply_loaded(
        self,
        loaded: imaging.LoadedImage,
        style: str | int | None,
        mix: MixSpec | None,
        strength: float,
        preserve_colors: bool,
        max_size: int | None,
        tile: str | int = "auto",
        memory_limit: str | int | None = None,
    ) -> Image.Image:
        rgb = _fit(loaded.rgb, max_size)
        out = self.apply_tensor(imaging.image_to_tensor(rgb), style, mix, strength, preserve_colors, tile, memory_limit)
        return imaging.tensor_to_image(out)

    def apply_file(
        self,
        source: str | os.PathLike,
        target: str | os.PathLike,
        style: str | int | None = None,
        mix: MixSpec | None = None,
        strength: float = 1.0,
        preserve_color: bool = False,
        max_size: int | None = None,
        max_pixels: int = ImageConfig.max_pixels,
        fmt: str | None = None,
        quality: int = ImageConfig.quality,
        overwrite: bool = False,
        tile: str | int = "auto",
        memory_limit: str | int | None = None,
    ) -> ApplyResult:
        """Read ``source``, stylize it and write ``target`` atomically; ``-`` means stdin or stdout.

        Every check that can fail (formats, existing output, output equal to input) runs before the model does.
        An existing ``target`` is replaced only with ``overwrite``; if it is a symbolic link, the link itself is
        replaced by the new file and whatever it points to is never written.
        """
        started = time.perf_counter()
        source_text, target_text = str(source), str(target)
        out_format = imaging.output_format(None if target_text == STDIO else target_text, fmt)
        if target_text != STDIO:
            if source_text != STDIO and imaging.same_file(source_text, target_text):
                raise StylizeError(f"output {target_text} is the input file", "choose another output path; inputs are never overwritten")
            imaging.check_output(target_text, overwrite=overwrite)
        description = self.describe_style(style, mix)
        _check_strength(strength)
        tiling.parse_tile(tile)
        tiling.parse_memory_size(memory_limit)
        data: Any = sys.stdin.buffer.read() if source_text == STDIO else source_text
        loaded = imaging.open_image(data, max_pixels=max_pixels, name="stdin" if source_text == STDIO else None)
        stylized = self._apply_loaded(loaded, style, mix, strength, preserve_color, max_size, tile, memory_limit)
        final = imaging.finish_image(stylized, _resized(loaded, stylized.size), out_format, keep_greyscale=preserve_color and loaded.is_greyscale)
        encoded = imaging.encode_image(
            final, out_format, quality=quality, exif=loaded.exif, icc_profile=loaded.icc_profile
        )
        if target_text == STDIO:
            sys.stdout.buffer.write(encoded)
            sys.stdout.buffer.flush()
        else:
            imaging.make_parent_folder(target_text)
            imaging.write_atomic(encoded, target_text, overwrite=overwrite)
        return ApplyResult(
            input=source_text,
            output=target_text,
            size=final.size,
            model=self.name,
            style=description,
            device=self.device,
            precision=self.precision,
            seconds=time.perf_counter() - started,
            frames=loaded.frames,
        )


def _parse_mix(mix: MixSpec) -> dict[str, float]:
    """``"3:0.5,12:0.5"`` or ``{"3": 0.5, 12: 0.5}`` -> ``{"3": 0.5, "12": 0.5}``, weights checked."""
    pairs: dict[str, float] = {}
    if isinstance(mix, dict):
        items = [(str(k), v) for k, v in mix.items()]
    else:
        items = []
        for part in str(mix).split(","):
            name, sep, value = part.strip().rpartition(":")
            if not sep or not name:
                raise StylizeError(f"bad mix entry '{part.strip()}' in '{mix}'", "write STYLE:WEIGHT pairs, e.g. 3:0.5,12:0.5")
            items.append((name.strip(), value))
    for name, value in items:
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise StylizeError(f"bad mix weight '{value}' for style '{name}'", "weights are numbers, e.g. 3:0.5,12:0.5") from None
        if not math.isfinite(weight) or weight < 0:
            raise StylizeError(f"mix weight for style '{name}' must be a non-negative number, got {value}", "e.g. 3:0.5,12:0.5")
        pairs[name] = pairs.get(name, 0.0) + weight
    if not pairs:
        raise StylizeError("empty mix", "write STYLE:WEIGHT pairs, e.g. 3:0.5,12:0.5")
    return pairs


def _check_strength(strength: float) -> None:
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise StylizeError(f"strength must be between 0 and 1, got {strength}", "e.g. --strength 0.7")


def _fit(image: Image.Image, max_size: int | None) -> Image.Image:
    """Downscale so the long side is at most ``max_size`` (never upscale)."""
    if max_size is None or max(image.size) <= max_size:
        return image
    if max_size < 16:
        raise StylizeError(f"--max-size must be at least 16 pixels, got {max_size}", "e.g. --max-size 1024")
    scale = max_size / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _resized(loaded: imaging.LoadedImage, size: tuple[int, int]) -> imaging.LoadedImage:
    """``loaded`` with its alpha resized to ``size`` (after --max-size), for re-attaching."""
    if loaded.alpha is None or loaded.alpha.size == size:
        return loaded
    return replace(loaded, alpha=loaded.alpha.resize(size, Image.Resampling.LANCZOS))
