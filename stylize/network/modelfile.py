"""Reading and writing style models: safetensors plus JSON metadata, and import of foreign checkpoints.

A model file holds the generator's tensors and, under the metadata key ``stylize``, a JSON object with the
format version, the full generator config, the style names, provenance and (for trained models) the training
settings, so that loading rebuilds the network from the file alone. Nothing is ever unpickled: foreign
``.pth``/``.model`` files go through ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stylize.config import PYTORCH_EXAMPLES_CONFIG, GeneratorConfig
from stylize.errors import StylizeError
from stylize.io import make_parent_folder, write_atomic
from stylize.network.generator import Generator

FORMAT_VERSION = 1
METADATA_KEY = "stylize"
#: Refuse headers larger than this before parsing them: a real model's header is a few kilobytes.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Plausibility limits on a model file's generator config, checked before anything is built from it.
MAX_WIDTH = 4096  # channels of one layer (the largest real models have 128)
MAX_COUNT = 4096  # residual blocks or styles


@dataclass
class StyleModel:
    """A generator together with what the model file says about it."""

    generator: Generator
    styles: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    # Precision that keeps this model's output visually identical to fp32, per device type ("cpu", "cuda").
    precision: dict[str, str] = field(default_factory=dict)
    default_style: str | None = None
    source: str = ""
    # 0: the norm tables hold styles, picked or mixed by convex weights. E > 0: the tables are an affine map from an
    # E-dimensional style embedding (rows 0..E-1 the linear part, row E the bias), as in Ghiasi et al.'s arbitrary-style
    # network; the style code of an embedding e is [e, 1] (see stylize.network.predictor).
    embedding_size: int = 0

    @property
    def config(self) -> GeneratorConfig:
        return self.generator.config

    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "generator": self.config.to_dict(),
            "styles": list(self.styles),
            "default_style": self.default_style,
            "provenance": self.provenance,
            "training": self.training,
            "precision": self.precision,
            "embedding_size": self.embedding_size,
        }


def save_model(model: StyleModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as ``.safetensors`` atomically (temporary file in the same folder, then rename)."""
    from safetensors.torch import save

    path = Path(path)
    if len(model.styles) != model.config.num_styles:
        raise ValueError(f"{len(model.styles)} style names for a {model.config.num_styles}-style generator")
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in model.generator.state_dict().items()}
    metadata = {METADATA_KEY: json.dumps(model.metadata(), sort_keys=True)}
    data = save(tensors, metadata=metadata)  # a few MB: serialised in memory, then written like an image
    make_parent_folder(path)
    # A full disk or a read-only folder becomes a one-line StylizeError and leaves no temporary file behind.
    return write_atomic(data, path, overwrite=True)


def load_model(path: str | os.PathLike[str]) -> StyleModel:
    """Load a ``.safetensors`` model of ours, or a foreign checkpoint (``.pth``/``.model``/``.pt``)."""
    path = Path(path)
    if not path.exists():
        raise StylizeError(f"model file not found: {path}", "check the path, or run 'stylize models' to list models")
    if path.is_dir():
        raise StylizeError(f"{path} is a folder, not a model file", "pass a .safetensors or .pth file")
    if path.suffix.lower() == ".safetensors":
        return _load_safetensors(path)
    if path.suffix.lower() in (".pth", ".pt", ".model", ".ckpt"):
        return load_foreign(path)
    raise StylizeError(
        f"unknown model file type '{path.suffix}' for {path.name}",
        "use a .safetensors model, or a pytorch/examples .pth/.model checkpoint",
    )


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse the JSON header ourselves first so that bad files fail with a clear message, not a crash."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise StylizeError(f"{path.name} is not a model file (too short to be safetensors)", "re-download or re-export it")
        header_len = int.from_bytes(prefix, "little")
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise StylizeError(
                f"{path.name} is not a valid safetensors file (header claims {header_len} bytes, file has {size})",
                "the file is truncated or not a model; re-download or re-export it",
            )
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise StylizeError(f"{path.name} is not a valid safetensors file (unreadable header)", "re-download it") from None
    if not isinstance(header, dict):
        raise StylizeError(f"{path.name} is not a valid safetensors file", "re-download it")
    data_len = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise StylizeError(
                f"{path.name} is truncated or damaged (tensor '{name}' lies outside the file)",
                "re-download or re-export the model",
            )
    return header


def _load_safetensors(path: Path) -> StyleModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = read_safetensors_header(path)
    raw_meta = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw_meta is None:
        raise StylizeError(
            f"{path.name} is a safetensors file but not a stylize model (no '{METADATA_KEY}' metadata)",
            "convert foreign checkpoints with 'stylize convert IN OUT.safetensors'",
        )
    try:
        meta = json.loads(raw_meta)
        version = int(meta["format_version"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise StylizeError(f"{path.name} has unreadable stylize metadata", "re-export the model") from None
    if version > FORMAT_VERSION:
        raise StylizeError(
            f"{path.name} uses model format version {version}; this stylize reads up to {FORMAT_VERSION}",
            "upgrade stylize: pip install -U stylize",
        )
    if version < 1:
        raise StylizeError(f"{path.name} has an invalid model format version {version}", "re-export the model")
    try:
        config = GeneratorConfig.from_dict(meta["generator"])
        _check_types(config)
        if not isinstance(meta["styles"], list):
            raise TypeError("'styles' is not a list")
        styles = [str(s) for s in meta["styles"]]
        for key in ("provenance", "training", "precision"):
            if not isinstance(meta.get(key) or {}, dict):
                raise TypeError(f"{key!r} is not an object")
        if not all(isinstance(v, str) for v in (meta.get("precision") or {}).values()):
            raise TypeError("'precision' values are not names")
        if not isinstance(meta.get("default_style"), (str, int, type(None))):
            raise TypeError("'default_style' is not a name")
        embedding_size = meta.get("embedding_size", 0)
        if not isinstance(embedding_size, int) or isinstance(embedding_size, bool) or embedding_size < 0:
            raise TypeError("'embedding_size' is not a count")
        if embedding_size and config.num_styles != embedding_size + 1:
            raise ValueError(f"an embedding of {embedding_size} needs {embedding_size + 1} norm-table rows, not {config.num_styles}")
    except (KeyError, TypeError, ValueError) as exc:
        raise StylizeError(f"{path.name} has an invalid generator config: {exc}", "re-export the model") from None
    if len(styles) != config.num_styles:
        raise StylizeError(
            f"{path.name} names {len(styles)} styles but its generator has {config.num_styles}", "re-export the model"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise StylizeError(f"{path.name} could not be read: {exc}", "re-download or re-export the model") from None
    generator = _build_generator(config, tensors, path.name)
    return StyleModel(
        generator=generator,
        styles=styles,
        provenance=dict(meta.get("provenance") or {}),
        training=dict(meta.get("training") or {}),
        precision=dict(meta.get("precision") or {}),
        default_style=meta.get("default_style"),
        source=str(path),
        embedding_size=embedding_size,
    )


def _check_types(config: GeneratorConfig) -> None:
    """Every config field has its default's type (JSON could hold anything), and floats are finite and positive."""
    for item in dataclasses.fields(config):
        value, default = getattr(config, item.name), item.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:  # the channel tuples: from_dict has already made their items int
            ok = isinstance(value, tuple)
        if not ok:
            raise TypeError(f"{item.name} is {value!r}")


def _expected_tensors(config: GeneratorConfig, name: str) -> dict[str, torch.Tensor]:
    """The state_dict ``config`` describes, on the meta device: shapes only, no memory, however large it claims to be."""
    too_big = [f"{key}={value}" for key, value in (("num_residual_blocks", config.num_residual_blocks), ("num_styles", config.num_styles))
               if value > MAX_COUNT]
    too_big += [f"a width of {width}" for width in (*config.encoder_channels, *config.decoder_channels) if not 0 < width <= MAX_WIDTH]
    if too_big:  # building even an empty network this large would take minutes
        raise StylizeError(f"{name} has an implausible generator config ({', '.join(too_big)})", "the file is damaged or was edited")
    try:
        with torch.device("meta"):
            return Generator(config).state_dict()
    except (RuntimeError, ValueError, TypeError) as exc:  # widths or sizes torch cannot build
        raise StylizeError(f"{name} has an invalid generator config: {exc}", "re-export the model") from None


def _build_generator(config: GeneratorConfig, tensors: dict[str, torch.Tensor], name: str) -> Generator:
    """Build the network from ``config`` and fill it, checking every tensor name, shape and value.

    The names and shapes are checked against a meta-device network first, so that a config claiming huge layers is
    refused before any memory is allocated for them.
    """
    expected = _expected_tensors(config, name)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise StylizeError(
            f"{name}: tensors do not match its generator config: {'; '.join(parts)}",
            "the file is damaged or was edited; re-export it",
        )
    for key, reference in expected.items():
        if tuple(tensors[key].shape) != tuple(reference.shape):
            raise StylizeError(
                f"{name}: tensor '{key}' has shape {tuple(tensors[key].shape)}, its config expects {tuple(reference.shape)}",
                "the file is damaged or was edited; re-export it",
            )
        if not torch.isfinite(tensors[key]).all():
            raise StylizeError(
                f"{name}: tensor '{key}' contains NaN or infinite values", "the model is broken; retrain or re-download it"
            )
    generator = Generator(config)  # now known to be the size of the tensors the file holds
    generator.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    generator.eval()
    generator.requires_grad_(False)
    return generator


# ---------------------------------------------------------------------------------------------------------------
# Foreign checkpoints

_PYTORCH_EXAMPLES_LAYERS = {
    "conv1.conv2d": "head.conv",
    "in1": "head.norm",
    "conv2.conv2d": "down1.conv",
    "in2": "down1.norm",
    "conv3.conv2d": "down2.conv",
    "in3": "down2.norm",
    "deconv1.conv2d": "up1.conv",
    "in4": "up1.norm",
    "deconv2.conv2d": "up2.conv",
    "in5": "up2.norm",
    "deconv3.conv2d": "tail.conv",
}
_RESIDUAL_KEY = re.compile(r"^res(\d+)\.(conv1\.conv2d|in1|conv2\.conv2d|in2)\.(weight|bias)$")
# Old pytorch/examples files carry running statistics that their InstanceNorm2d never used at inference.
_IGNORED_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def map_pytorch_examples_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a pytorch/examples fast_neural_style ``TransformerNet`` state_dict to our ``Generator`` names.

    Instance-norm ``weight``/``bias`` vectors ``[C]`` become one-row ``gamma``/``beta`` tables ``[1, C]``.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        residual = _RESIDUAL_KEY.match(key)
        if residual:
            index, layer, kind = int(residual.group(1)) - 1, residual.group(2), residual.group(3)
            conv = "conv1" if layer in ("conv1.conv2d", "in1") else "conv2"
            part = "conv" if layer.endswith("conv2d") else "norm"
            target = f"residual.{index}.{conv}.{part}"
        else:
            layer, _, kind = key.rpartition(".")
            if layer not in _PYTORCH_EXAMPLES_LAYERS:
                raise KeyError(key)
            target = _PYTORCH_EXAMPLES_LAYERS[layer]
        if target.endswith(".norm"):
            mapped[f"{target}.{'gamma' if kind == 'weight' else 'beta'}"] = tensor.reshape(1, -1)
        else:
            mapped[f"{target}.{kind}"] = tensor
    return mapped


def _unpickler_reason(exc: Exception) -> str:
    """The useful part of torch's weights-only refusal (a paragraph of advice to load unsafely), on one short line."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.? Please use|\n|$)", text)
    reason = found.group(1).strip() if found else text.splitlines()[0] if text else type(exc).__name__
    return reason[:160]


def load_foreign(path: Path) -> StyleModel:
    """Load a pytorch/examples fast_neural_style checkpoint without unpickling any object."""
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it was not written with; the file loads or is refused either way
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise StylizeError(
            f"refusing to load {path.name}: it contains Python objects, not just tensors ({_unpickler_reason(exc)})",
            "only plain state_dict checkpoints are accepted; never unpickle files from strangers",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise StylizeError(f"{path.name} is not a readable PyTorch checkpoint: {str(exc)[:160]}", "re-download it") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StylizeError(f"{path.name} is not a state_dict of tensors", "pass a pytorch/examples .pth/.model file")
    if "conv1.conv2d.weight" not in state:
        raise StylizeError(
            f"{path.name} is not a checkpoint format stylize knows",
            "supported: stylize .safetensors and pytorch/examples fast_neural_style .pth/.model",
        )
    try:
        tensors = map_pytorch_examples_keys(state)
    except KeyError as exc:
        raise StylizeError(f"{path.name}: unexpected tensor {exc} for a pytorch/examples network", "re-download it") from None
    num_blocks = len({k.split(".")[1] for k in tensors if k.startswith("residual.")})
    c1 = tensors["head.conv.weight"].shape[0]
    c2 = tensors["down1.conv.weight"].shape[0]
    c3 = tensors["down2.conv.weight"].shape[0]
    d1 = tensors["up1.conv.weight"].shape[0]
    d2 = tensors["up2.conv.weight"].shape[0]
    config = GeneratorConfig(
        **{
            **PYTORCH_EXAMPLES_CONFIG.to_dict(),
            "encoder_channels": (c1, c2, c3),
            "decoder_channels": (d1, d2),
            "num_residual_blocks": num_blocks,
        }
    )
    generator = _build_generator(config, tensors, path.name)
    return StyleModel(
        generator=generator,
        styles=[path.stem],
        provenance={"source": path.name, "format": "pytorch/examples fast_neural_style state_dict"},
        precision={},
        default_style=path.stem,
        source=str(path),
    )

