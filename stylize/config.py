"""Frozen dataclasses that hold every setting and its default: the only home of defaults (and so a long module).

A generator's config is stored in every model file, so loading rebuilds the network from the file alone.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stylize.errors import StylizeError

OutputActivation = Literal["sigmoid", "clamp", "tanh"]
UpsampleMode = Literal["nearest", "transposed"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes and choices of a Johnson-style residual generator (see :class:`stylize.network.generator.Generator`)."""

    # Widths of the 9x9 input conv and the two stride-2 convs; the last is also the residual blocks' width.
    encoder_channels: tuple[int, int, int] = (32, 64, 128)
    # Residual blocks (conv-norm-ReLU-conv-norm plus skip) at the bottleneck.
    num_residual_blocks: int = 5
    # Widths of the two upsampling stages; the 9x9 output conv then maps the last one to RGB.
    decoder_channels: tuple[int, int] = (64, 32)
    # "nearest": nearest x2 then conv, which avoids checkerboard artefacts; "transposed": a stride-2 transposed conv.
    upsample: UpsampleMode = "nearest"
    # How the output conv's values become pixels in [0, 1]: a sigmoid, a plain clamp, or (tanh + 1) / 2.
    output_activation: OutputActivation = "sigmoid"
    # Whether the 9x9 output conv is followed by (conditional) instance norm, as in Dumoulin et al.'s network.
    normalize_output: bool = False
    # Whether the three encoder convs are followed by (conditional) instance norm. Magenta's arbitrary-style
    # transformer (Ghiasi et al.) has none there: its encoder's batch norm is folded into the conv biases.
    normalize_encoder: bool = True
    # Bias terms in the convs; redundant before instance norm, but pytorch/examples checkpoints have them.
    conv_bias: bool = True
    # Number of styles held in the conditional instance norm tables (1 = an ordinary single-style network).
    num_styles: int = 1
    # Epsilon added to the variance in every instance norm.
    norm_eps: float = 1e-5
    # Pixel scale the weights were trained for: 1.0 for [0, 1] images, 255.0 for pytorch/examples models.
    pixel_scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.encoder_channels) != 3 or len(self.decoder_channels) != 2:
            raise ValueError("encoder_channels needs 3 widths and decoder_channels 2")
        if self.num_styles < 1 or self.num_residual_blocks < 0:
            raise ValueError("num_styles must be >= 1 and num_residual_blocks >= 0")
        if self.upsample not in ("nearest", "transposed"):
            raise ValueError(f"unknown upsample mode {self.upsample!r}")
        if self.output_activation not in ("sigmoid", "clamp", "tanh"):
            raise ValueError(f"unknown output activation {self.output_activation!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error, missing ones take defaults."""
        values = _known_fields(cls, data, "generator")
        for key in ("encoder_channels", "decoder_channels"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def with_styles(self, num_styles: int) -> GeneratorConfig:
        return dataclasses.replace(self, num_styles=num_styles)


def _known_fields(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """A copy of ``data`` (a stored config), refusing keys that are not fields of the dataclass ``cls``."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings: {', '.join(sorted(unknown))}")
    return dict(data)


#: Named generator sizes for ``stylize train --arch``.
ARCHITECTURES: dict[str, GeneratorConfig] = {
    # Johnson et al.'s network as pytorch/examples builds it: 32-64-128 channels, 5 residual blocks.
    "johnson": GeneratorConfig(),
    # A quarter of the FLOPs: narrower stages, fewer blocks; for fast training runs and small devices.
    "small": GeneratorConfig(
        encoder_channels=(16, 32, 64), num_residual_blocks=3, decoder_channels=(32, 16)
    ),
    # The bundled 26-style network's shape (Dumoulin et al., as in TensorFlow's Android stylize demo).
    "dumoulin": GeneratorConfig(
        encoder_channels=(32, 32, 32),
        num_residual_blocks=6,
        decoder_channels=(8, 4),
        normalize_output=True,
        conv_bias=False,
    ),
}

#: The network used when pytorch/examples fast_neural_style checkpoints are loaded.
PYTORCH_EXAMPLES_CONFIG = GeneratorConfig(output_activation="clamp", pixel_scale=255.0)


#: A tile setting: "auto" (whole image when it fits the memory budget, streamed tiles otherwise), "off" (always the
#: whole image) or a tile side in pixels (always streamed).
TileSetting = str | int
#: Extensions of the video files stylize converts (through stylize.video; the container keeps its extension).
VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "m4v", "mov", "mkv", "webm", "avi")
#: Extensions a folder run picks up when none are given: images and videos.
DEFAULT_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", *VIDEO_EXTENSIONS)
#: How a strength below 1 is applied (see ApplyOptions.blend).
BLEND_MODES = ("auto", "pixels", "embedding")
#: A style mix: "3:0.5,12:0.5" or {"3": 0.5, 12: 0.5}; the weights are normalised to sum 1.
MixSpec = str | Mapping[str | int, float]


@dataclass(frozen=True)
class ApplyOptions:
    """What is done to each photo: the settings of ``stylize apply`` and ``Stylizer.apply`` (the model, device,
    precision and compile mode are the :class:`~stylize.api.Stylizer`'s). Values are checked, and ``tile`` and
    ``memory_limit`` parsed, when the options are made; errors name the parameter.
    """

    # Style of the model by name or index; None: the model's default style.
    style: str | int | None = None
    # A blend of styles instead of one (see MixSpec).
    mix: MixSpec | None = None
    # Paintings whose style an arbitrary-style model predicts, instead of style or mix: a path, several (equal
    # weights), or paths with weights ({"a.jpg": 0.7, "b.jpg": 0.3}, or "a.jpg:0.7").
    style_image: Any = None
    # 0 returns the photo unchanged, 1 the full style; in between, see blend.
    strength: float = 1.0
    # How a strength below 1 weakens the style: "pixels" blends the result with the photo; "embedding" moves a
    # predicted style's embedding toward the photo's own (Magenta's way; style_image only); "auto": embedding for
    # style_image, pixels otherwise.
    blend: str = "auto"
    # Keep the photo's colours (BT.601 chroma) and take the stylized luminance.
    preserve_color: bool = False
    # Downscale so that the long side is at most this many pixels before stylizing (never upscale); None: full size.
    max_size: int | None = None
    # Long side in pixels the network paints at, which sets the stroke size relative to the image: the result is
    # upsampled to the photo's size with the photo's own fine detail added back. None: the photo's own size.
    work_size: int | None = None
    # Decompression-bomb guard: images with more pixels are refused. 120 MP admits an 8000x8000 print file and any
    # current camera, and refuses forged 50000x50000 headers.
    max_pixels: int = 120_000_000
    # JPEG/WebP quality of written images.
    quality: int = 95
    # Output format (jpg, png, webp, tif, bmp); None: from the output's extension (PNG for stdout).
    format: str | None = None
    # Replace existing outputs.
    overwrite: bool = False
    # See TileSetting; strings such as "512" are accepted and stored as int.
    tile: TileSetting = "auto"
    # Memory budget of the whole-or-streamed decision, in bytes; "2GB", "512MiB" are accepted. None: a share of
    # available RAM (TilingConfig.ram_share) or of free GPU memory (TilingConfig.gpu_share).
    memory_limit: int | str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.strength, (int, float)) and math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise StylizeError(f"`strength` must be between 0 and 1, got {self.strength}", "e.g. `strength=0.7`")
        if self.max_size is not None and self.max_size < 16:
            raise StylizeError(f"`max_size` must be at least 16 pixels, got {self.max_size}", "e.g. `max_size=1024`")
        if self.work_size is not None and self.work_size < 64:
            raise StylizeError(f"`work_size` must be at least 64 pixels, got {self.work_size}", "e.g. `work_size=1024`")
        if self.blend not in BLEND_MODES:
            raise StylizeError(f"unknown blend '{self.blend}'", f"use `blend` {', '.join(BLEND_MODES)}")
        if self.max_pixels < 1:
            raise StylizeError(f"`max_pixels` must be positive, got {self.max_pixels}", "e.g. `max_pixels=200000000`")
        if not 1 <= self.quality <= 100:
            raise StylizeError(f"`quality` must be between 1 and 100, got {self.quality}", "e.g. `quality=90`")
        object.__setattr__(self, "tile", parse_tile(self.tile))
        object.__setattr__(self, "memory_limit", parse_memory_size(self.memory_limit))
        if self.format is not None:
            object.__setattr__(self, "format", self.format.lower().lstrip("."))

    def replace(self, **changes: Any) -> ApplyOptions:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FolderOptions(ApplyOptions):
    """:class:`ApplyOptions` for every file of a folder, and how the folder is walked and processed.

    ``format`` may also be ``"same"`` (the default: each output keeps its input's format, PNG for formats stylize
    does not write).
    """

    format: str | None = "same"
    # Text appended to each output's stem, e.g. "_styled".
    suffix: str = ""
    # Include subfolders (the tree is mirrored under the output folder).
    recursive: bool = True
    # Extensions to convert, lower case without dots; "jpg, .PNG" is accepted.
    extensions: tuple[str, ...] | str = DEFAULT_EXTENSIONS
    # Images of equal padded size run through the network together; None: 4 on the CPU, 8 on CUDA (then capped per
    # batch by the pixel budget, see stylize.pipeline.folder_run).
    batch_size: int | None = None
    # Decoding processes; None: half the CPUs (at most 8); 0 decodes in the main process.
    workers: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(sep in self.suffix for sep in ("/", "\\", "\0")) or self.suffix in (".", ".."):
            raise StylizeError(f"`suffix` '{self.suffix}' may not contain a path separator", "e.g. `suffix=_styled`")
        if self.batch_size is not None and self.batch_size < 1:
            raise StylizeError(f"`batch_size` must be at least 1, got {self.batch_size}", "e.g. `batch_size=4`")
        if self.workers is not None and self.workers < 0:
            raise StylizeError(f"`workers` must be 0 or more, got {self.workers}", "0 decodes in the main process")
        object.__setattr__(self, "extensions", parse_extensions(self.extensions))


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_UNITS.update({f"{u}ib": v for u, v in list(_UNITS.items()) if u not in ("", "b")})
_UNITS.update({"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4})
#: The smallest memory budget accepted: below it even the smallest tiles' working set does not fit.
MIN_MEMORY_LIMIT = 64 * 1024**2


def parse_memory_size(text: str | int | None) -> int | None:
    """``"2GB"`` -> 2e9, ``"512MiB"`` or ``"512M"`` -> 512 * 2**20, ``"1.5G"``, ``"1000000"`` (bytes); ``None`` stays ``None``.

    Units: B, KB/MB/GB/TB (powers of 1000), K/M/G/T and KiB/MiB/GiB/TiB (powers of 1024); case-insensitive.
    """
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise StylizeError(f"bad memory size '{text}'", "write a number with a unit, e.g. 2GB, 512MiB or 1.5G")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size < MIN_MEMORY_LIMIT:
        raise StylizeError(f"`memory_limit` {text} is too small", "give at least 64MB, e.g. `memory_limit=1GB`")
    return size


def parse_tile(tile: TileSetting) -> TileSetting:
    """``"auto"``, ``"off"`` or a tile side in pixels (at least 16), from a string or a Python value."""
    text = str(tile).strip().lower()
    if text in ("auto", "off"):
        return text
    if not text.isdigit():
        raise StylizeError(f"bad `tile` setting '{tile}'", "use `tile=auto`, `tile=off` or a side in pixels, e.g. `tile=512`")
    pixels = int(text)
    if pixels < 16:
        raise StylizeError(f"`tile` must be at least 16 pixels, got {pixels}", "e.g. `tile=256`")
    return pixels


def parse_extensions(extensions: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"jpg, .PNG"`` or ``("jpg", ".PNG")`` -> ``("jpg", "png")``; None -> the defaults."""
    if extensions is None:
        return DEFAULT_EXTENSIONS
    parts = extensions.split(",") if isinstance(extensions, str) else extensions
    parsed = tuple(dict.fromkeys(part.strip().lower().lstrip(".") for part in parts if part.strip()))
    if not parsed:
        raise StylizeError(f"`extensions` '{extensions}' name no extension", "e.g. `extensions=jpg,png`")
    return parsed


@dataclass(frozen=True)
class SheetOptions:
    """A contact sheet: one photo in every style of a model, or with each of several paintings, as one labelled grid
    (``stylize sheet``, :meth:`stylize.api.Stylizer.sheet`)."""

    # Long side of each tile in pixels: the photo is scaled down to it (never up) and stylized at that size.
    size: int = 256
    # Tiles per row; None: as many as make the grid about square.
    columns: int | None = None
    # Which of the model's styles, by name or index ("0,7,19" or a tuple); None: every style.
    styles: str | tuple[str | int, ...] | None = None
    # Paintings whose predicted style makes one tile each (arbitrary-style models): paths, or in-memory
    # stylize.styles.PaintingData (uploads).
    paintings: tuple[Any, ...] = ()
    # A first tile with the photo itself, to compare against.
    original: bool = True
    # Each tile's label (the style's name or index, the painting's name) under it.
    labels: bool = True
    # What is done to every tile (strength, preserve_color, ...); its style, mix, style_image, max_size and work_size
    # are the sheet's to set.
    apply: ApplyOptions = ApplyOptions()

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 4096:
            raise StylizeError(f"`size` of a tile must be between 16 and 4096 pixels, got {self.size}", "e.g. `size=256`")
        if self.columns is not None and not 1 <= self.columns <= 256:
            raise StylizeError(f"`columns` must be between 1 and 256, got {self.columns}", "e.g. `columns=6`")
        if isinstance(self.styles, str):
            parts = tuple(part.strip() for part in self.styles.split(",") if part.strip())
            if not parts:
                raise StylizeError(f"`styles` '{self.styles}' names no style", "e.g. `styles=0,7,19`")
            object.__setattr__(self, "styles", parts)
        object.__setattr__(self, "paintings", tuple(self.paintings))

    def replace(self, **changes: Any) -> SheetOptions:
        return dataclasses.replace(self, **changes)


#: ApplyOptions fields a server keeps to itself: a client never names a file (style_image comes as uploads), never
#: writes one (overwrite), and cannot move the memory and pixel bounds the server runs under.
SERVER_OWNED_FIELDS = frozenset({"style_image", "overwrite", "max_pixels", "tile", "memory_limit"})


@dataclass(frozen=True)
class ServeOptions:
    """``stylize serve``: the local studio page and the HTTP API (see :mod:`stylize.serve`)."""

    # Address to listen on. The loopback address keeps the server to this machine; any other is a choice to share it.
    host: str = "127.0.0.1"
    # TCP port (0: any free port).
    port: int = 8000
    # Models loaded before the first request (names as `stylize models` lists them); others load on first use.
    models: tuple[str, ...] = ()
    # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or "mps".
    device: str = "auto"
    # "auto", "fp32", "bf16" or "fp16" (see ApplyOptions and `stylize apply --precision`).
    precision: str = "auto"
    # torch.compile: "never" by default because a server sees photos of every size and a compile stalls all waiting
    # requests for 10-40 s on a CPU; "auto" compiles a size once it has cost 15 s eagerly.
    compile: str = "never"
    # Largest request body in bytes (the photo, paintings and fields together): 50 MB holds a 24-megapixel PNG.
    max_upload_bytes: int = 50_000_000
    # Decompression-bomb guard for uploads, checked on the header before decoding: 40 MP admits any phone photo and
    # keeps one request's pixels near 120 MB (the CLI's own default is 120 MP, for files the user chose).
    max_pixels: int = 40_000_000
    # Requests the server works on at once (being read, waiting or running); one more is answered 503 before its
    # body is read. With max_upload_bytes and max_pixels this bounds memory under any load.
    max_pending: int = 16
    # Photos of equal padded size that go through the network together (None: 4 on the CPU, 8 on CUDA; then capped
    # per batch by the pixel budget of stylize.pipeline.folder_run, as for folders).
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise StylizeError(f"`port` must be between 0 and 65535, got {self.port}", "e.g. `port=8000`")
        if self.max_upload_bytes < 1024 or self.max_pixels < 64 or self.max_pending < 1:
            raise StylizeError("`max_upload_bytes` must be at least 1024, `max_pixels` at least 64 and `max_pending` at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise StylizeError(f"`batch_size` must be at least 1, got {self.batch_size}", "e.g. `batch_size=4`")
        object.__setattr__(self, "models", tuple(self.models))

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect (127.0.0.0/8, ::1 or localhost)."""
        return self.host in ("localhost", "::1") or self.host.startswith("127.")


def field_help(cls: type) -> dict[str, str]:
    """The comment lines right above each field of the dataclass ``cls``, joined: its documentation (CLI help texts,
    the HTTP API's schema)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a frozen build): settings without help
        return {}
    helps: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        match = re.match(r"(\w+)\s*:", text)
        if match and pending:
            helps[match.group(1)] = " ".join(pending)
        pending = []
    return helps


@dataclass(frozen=True)
class StartRecipe:
    """What a run from one start does unless told otherwise (see :data:`TRAIN_RECIPES`)."""

    trainable: str  # "all" or "norms"
    iterations: int | None  # a fixed step count, or None: the steps a time budget holds
    seconds: float | None  # the time budget a painting
    schedule: str  # of the learning rate: "constant" or "cosine"
    batch_size: int
    lr: float
    norm_rate: float  # the norm tables' rate as a multiple of lr
    border_weight: float  # LossConfig.border_weight: what keeps marks bound to the frame out of the model


#: What each start does by default. "random" is Johnson et al.'s recipe: 40,000 steps of 4 crops at a constant 1e-3.
#: "predicted" is 10 minutes a painting: every layer trains (after 300 steps that beats the norm rows alone after
#: 1,000), in steps of 2 crops, the rate warms up and decays to zero over the planned steps, and the norm tables, where
#: a style lives, move at a multiple of it; at equal time it ties the fixed-step recipe before it on held-out photos
#: while ending where the budget says (docs/benchmarks/quality.md). "from" (a from_model given) trains only the new
#: styles' norm rows, Dumoulin et al.'s recipe, at the batch and rate it was measured at, for 10 minutes a painting.
#: Budgets are per painting: each painting's style is learnt from the photos drawn for it. Training every layer of the
#: arbitrary network paints marks bound to the frame (a blob in a corner, lines along the edges) unless the border term
#: holds its edges to what the interior would paint. "random" and "from" leave it off: the 26-style network, trained
#: from scratch, is the marks-free reference, and norm rows alone are not measured to paint them.
TRAIN_RECIPES: dict[str, StartRecipe] = {
    "random": StartRecipe("all", 40_000, None, "constant", 4, 1e-3, 1.0, 0.0),
    "predicted": StartRecipe("all", None, 600.0, "cosine", 2, 5e-4, 4.0, 1e7),
    "from": StartRecipe("norms", None, 600.0, "cosine", 4, 1e-3, 1.0, 0.0),
}
#: Learning-rate schedules: "constant", or "cosine" (a linear warm-up over the first WARMUP_STEPS, then a cosine decay
#: to zero at the last step). The warm-up does not depend on the step count, so a run planned from a time budget can
#: time its first steps before it fixes the count.
SCHEDULES = ("constant", "cosine")
WARMUP_STEPS = 20
#: Adam's rate when ``trainable`` is not the start's own choice (norm rows alone of a predicted start, every layer of
#: a from_model start): Johnson et al.'s, the rate those were measured at (docs/benchmarks/quality.md).
LEARNING_RATE = 1e-3
INITS = ("predicted", "random")

#: VGG16 layers the style loss uses by default (Johnson et al.): one per resolution, coarse to fine textures.
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class LossConfig:
    """Weights and layers of the perceptual loss (see :class:`stylize.training.losses.PerceptualLoss`).

    The weights are Johnson et al.'s for the same loss network (Caffe VGG16, 0-255 BGR input), the same Gram
    normalisation (C*H*W) and mean-squared errors, so the paper recipe reproduces their balance.
    """

    # Multiplies the feature MSE at content_layer.
    content_weight: float = 1.0
    # Multiplies the sum over style layers of layer weight x Gram MSE.
    style_weight: float = 5.0
    # Multiplies the squared total variation of the [0, 1] output (see losses.total_variation): a little smoothing
    # against high-frequency noise. Johnson et al.'s 1e-6 on the summed 0-255 differences of a 4x256x256 batch is
    # 1e-6 / 2 * 255^2 * 4 * 3 * 256^2 ~ 2.5e4 times our per-element means.
    tv_weight: float = 2.5e4
    # Long side, in pixels, the style image is resized to before its Gram targets are taken (0: keep its size).
    # Smaller makes the brush strokes larger in the output; 512 suits 256-pixel training crops.
    style_size: int = 512
    # VGG16 layer whose features the output must keep: relu2_2 keeps structure without copying colours.
    content_layer: str = "relu2_2"
    # VGG16 layers whose Gram matrices the output must match.
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    # Weight of each style layer, in the order of style_layers.
    style_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    # Multiplies the border term (stylize.training.losses.border_loss): the squared difference, in [0, 1] pixels,
    # between a crop's output and the network's own output on a view BORDER_MARGIN pixels wider on every side. It keeps
    # marks bound to the frame (a blob in a corner, lines along the edges) out of trained models. 0: off; None: the
    # start's recipe.
    border_weight: float | None = None

    def __post_init__(self) -> None:
        if len(self.style_layer_weights) != len(self.style_layers):
            raise StylizeError("`style_layer_weights` needs one weight per style layer")
        weights = (self.content_weight, self.style_weight, self.tv_weight, self.border_weight or 0.0)
        if min(weights) < 0 or self.style_size < 0:
            raise StylizeError(
                "`content_weight`, `style_weight`, `tv_weight`, `border_weight` and `style_size` must be >= 0"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``stylize train`` needs; CLI flags are these field names in kebab case (``--from`` is from_model).

    Defaults follow Johnson et al.'s recipe: 256x256 crops of COCO-like photos, batch 4, Adam 1e-3, 40k iterations.
    """

    # Style images: file paths, or names of bundled paintings ("starry_night"). Several train one N-style network.
    style: tuple[str, ...] = ()
    # Folder searched recursively for training photos; None uses the small bundled set (a demo, not a recipe).
    content_dir: str | None = None
    # Output model file; None: "<first style name>.safetensors" in the current folder.
    out: str | None = None
    # How the network starts: "predicted" (the arbitrary-style network with each painting's predicted norm parameters:
    # a good model in minutes), or "random" (fresh weights: Johnson et al.'s recipe, many hours on a CPU).
    init: str = "predicted"
    # What trains: "norms" (only the conditional-norm gamma/beta rows) or "all". None: the init's recipe (TRAIN_RECIPES).
    trainable: str | None = None
    # Time budget of the whole run, e.g. 10m, 90s or 1.5h: the step count is planned from the step time measured on the
    # first steps. None: the start's recipe (TRAIN_RECIPES: 10 minutes a painting, or 40,000 steps for init random).
    time: str | None = None
    # Optimiser steps, instead of a time budget (a run planned from a budget records its count: this reproduces it).
    iterations: int | None = None
    # Passes over the content photos, instead of a time budget or iterations.
    epochs: float | None = None
    # Learning-rate schedule: "cosine" (warm-up, then decay to zero at the last step) or "constant". None: the start's.
    schedule: str | None = None
    # Decay of an exponential moving average of the weights, which the model file then holds; 0: the last weights.
    ema: float = 0.0
    # Images per optimiser step across all processes (each of K distributed processes takes batch_size / K). None: the
    # start's recipe (TRAIN_RECIPES: 2 for a predicted start, 4 otherwise).
    batch_size: int | None = None
    # Side of the square training crops in pixels.
    image_size: int = 256
    # Adam learning rate. None: the start's recipe (TRAIN_RECIPES), or LEARNING_RATE when trainable is not the start's.
    lr: float | None = None
    # The conditional-norm tables' rate as a multiple of lr (a style lives in them). None: the start's recipe.
    norm_rate: float | None = None
    # Generator size for init "random": a key of ARCHITECTURES ("johnson", "small", "dumoulin").
    arch: str = "johnson"
    # Existing model to add styles to: only the new styles' gamma/beta rows train (Dumoulin et al.'s fine-tuning).
    from_model: str | None = None
    # Seeds the weights' initialisation, the photo order, crops and flips: same seed, same model.
    seed: int = 0
    # "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # "auto": bf16 autocast on CUDA and on CPUs with AMX or AVX-512 BF16, fp16 with a grad scaler on GPUs without bf16, else fp32.
    precision: Precision = "auto"
    # torch.compile of generator and loss network: "auto" (single-process CUDA runs of at least
    # COMPILE_MIN_STEPS steps still to go; on the CPU the eager step is faster), "always" or "never".
    compile: str = "auto"
    # Background processes decoding photos; 0 decodes in the training process.
    workers: int = 2
    # Steps between checkpoints (also written at the end and on Ctrl-C).
    checkpoint_every: int = 500
    # "auto": the checkpoint next to out if there is one; or a checkpoint path; None starts afresh.
    resume: str | None = None
    # Steps between preview grids (held-out photos x styles) saved as PNG next to the checkpoint; 0: none.
    preview_every: int = 0
    # JSON-lines file receiving one line of losses and speed per logging step.
    log: str | None = None
    # Steps between logging lines.
    log_every: int = 10
    # Loss network: "bundled" (shipped Caffe VGG16 weights) or "torchvision" (downloads IMAGENET1K_V1 once).
    loss_net: str = "bundled"
    # A safetensors file with VGG16 conv1_1-conv4_3 weights to use instead of the bundled ones.
    vgg_weights: str | None = None
    # The loss weights and layers.
    loss: LossConfig = LossConfig()

    # Values are checked by stylize.training.setup.check_config, which raises StylizeError with a hint for each.

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TilingConfig:
    """How images too large for memory are streamed through the network (see :mod:`stylize.engine.tiling`)."""

    # Side in pixels of a tile, measured in each layer's output: 512 keeps per-tile overhead low and the strip buffers near 0.5 GB at 8000 px wide.
    tile: int = 512
    # Smallest tile tried when CUDA runs out of memory and the tile is halved again and again.
    min_tile: int = 32
    # Share of MemAvailable (/proc/meminfo) that a CPU run may use when no --memory-limit is given.
    ram_share: float = 0.5
    # Share of free GPU memory (torch.cuda.mem_get_info) that a CUDA run may plan to use.
    gpu_share: float = 0.85
    # Folder for temporary activation files when the maps do not fit in RAM; None = the system default (TMPDIR).
    temp_dir: str | None = None


@dataclass(frozen=True)
class PredictorConfig:
    """Sizes of the style predictor (see :class:`stylize.network.predictor.StylePredictor`): Magenta's MobileNetV2 followed by
    a linear bottleneck to the style embedding (Ghiasi et al., 2017). Stored in the predictor file, so loading rebuilds
    the network from the file alone."""

    # Side in pixels of the square painting the predictor was exported for: paintings are centre-cropped and resized to it.
    image_size: int = 256
    # Length of the style embedding; an arbitrary-style transformer's norm tables have embedding_size + 1 rows.
    embedding_size: int = 100
    # Width of the stride-2 3x3 stem conv.
    stem_channels: int = 32
    # MobileNetV2's inverted-residual stages: (expansion factor, output channels, blocks, stride of the first block).
    stages: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    # Width of the 1x1 conv before the global average pool.
    head_channels: int = 1280

    def __post_init__(self) -> None:
        if min(self.image_size, self.embedding_size, self.stem_channels, self.head_channels) < 1 or not self.stages:
            raise ValueError("predictor sizes must be >= 1 and stages must not be empty")
        if any(len(stage) != 4 or min(stage) < 1 for stage in self.stages):
            raise ValueError("each predictor stage needs 4 values >= 1: expansion, channels, blocks, stride")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictorConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error, missing ones take defaults."""
        values = _known_fields(cls, data, "predictor")
        if "stages" in values:  # JSON lists -> tuples
            values["stages"] = tuple(tuple(stage) for stage in values["stages"])
        numbers = [values.get(key, 1) for key in ("image_size", "embedding_size", "stem_channels", "head_channels")]
        numbers += [v for stage in values.get("stages", ()) for v in stage]
        bad = [v for v in numbers if not isinstance(v, int) or isinstance(v, bool)]
        if bad:
            raise TypeError(f"predictor sizes must be integers, got {bad[0]!r}")
        return cls(**values)


@dataclass(frozen=True)
class TemporalOptions:
    """How video frames are kept stable from one to the next (see :mod:`stylize.pipeline.temporal`); measured by
    scripts/bench/bench_video.py."""

    # Weight of the past in each instance norm's running statistics (0: every frame by its own statistics).
    momentum: float = 0.9
    # How much of the previous stylized frame, warped along the input's motion, carries into each new one: the squared
    # spatial frequency (radians per pixel) at which half of the difference is carried (0: none; larger carries finer
    # detail too, steadier but softer strokes). 1.2 halves the flicker and keeps the style loss within 10% of per-frame
    # stylization's (scripts/bench/bench_video.py).
    flow_strength: float = 1.2
    # Difference (0-1 scale) between a frame's grey copy and the previous one warped along the motion, above which a
    # pixel is not blended.
    flow_tolerance: float = 0.08
    # Scale of the grid the flow blend works on (1: the frame's own pixels). What it carries is mostly coarse, so 0.5
    # costs a quarter and is less steady only by a few percent (its strokes' band is carried less).
    blend_scale: float = 1.0
    # Shift each frame by 0-3 pixels so that a panning picture meets the network's stride grid the same way every frame:
    # the network then redraws the same strokes, moved, instead of new ones.
    phase_lock: bool = True
    # Mean difference of 32x32 grey thumbnails (0-1 scale) above which a frame starts a new scene: state restarts.
    scene_cut: float = 0.12

    def __post_init__(self) -> None:
        if not (
            0.0 <= self.momentum < 1.0 and self.flow_strength >= 0.0 and self.flow_tolerance > 0 and 0 < self.blend_scale <= 1 and self.scene_cut >= 0
        ):
            raise StylizeError(
                "temporal settings out of range", "momentum in [0, 1), flow_strength >= 0, flow_tolerance > 0, blend_scale in (0, 1], scene_cut >= 0"
            )


#: Constant rate factor used when VideoOptions.crf is None: about the same visual quality from each encoder, a little
#: above their own defaults (x264 23, x265 28) because stylized frames are all texture and starved strokes look smeared.
VIDEO_CRF: dict[str, int] = {"libx264": 18, "libx265": 24, "libvpx-vp9": 31}
#: Speed preset used when VideoOptions.preset is None. x264's veryfast at CRF 18 matches medium at CRF 20 in PSNR on
#: stylized frames for 17% more bytes and 45% of the encoding time, which on a few cores is taken from the network
#: (docs/benchmarks/video.md).
VIDEO_PRESET: dict[str, str] = {"libx264": "veryfast", "libx265": "medium"}


@dataclass(frozen=True)
class VideoOptions:
    """How videos are decoded, encoded and cut into resumable segments (see :mod:`stylize.video`)."""

    # Encoder: "libx264" (H.264, plays everywhere), "libx265" (HEVC: smaller, slower) or "libvpx-vp9";
    # None: libx264, or libvpx-vp9 for WebM (which holds only VP8/VP9/AV1).
    codec: str | None = None
    # Constant rate factor: lower is better and larger (x264/x265 0-51, VP9 0-63); None: VIDEO_CRF[codec].
    crf: int | None = None
    # x264/x265 speed preset, "ultrafast" ... "veryslow"; None: VIDEO_PRESET[codec]. VP9 always encodes with
    # deadline=good, cpu-used=4.
    preset: str | None = None
    # Pixel format written: 8-bit 4:2:0 plays in every player and browser; "yuv444p" or "yuv420p10le" on request.
    pix_fmt: str = "yuv420p"
    # Container, as an FFmpeg muxer name or extension ("mp4", "mov", "mkv", "webm"); None: from the output's extension.
    format: str | None = None
    # Longest side of the frames handed to the processor; larger frames are scaled down on decode, keeping the aspect,
    # to even sizes. 0 keeps the source size.
    max_size: int = 0
    # Seconds of input per segment, the unit of resumption: a killed run loses at most this much work, and each
    # segment starts with a keyframe (10 s is also x264's default keyframe interval at 25 fps).
    segment_seconds: float = 10.0
    # Encoder threads. Fixed rather than "one per core" because x264's output depends on its thread count: a run
    # resumed on another machine must encode the same bytes.
    encoder_threads: int = 4
    # Decoded frames waiting for the processor, and processed frames waiting for the encoder: bounds memory
    # (a 1080p frame is 6 MB) whatever the length of the clip.
    queue_frames: int = 16

    # Values are checked by stylize.video.settings.plan_output, which raises StylizeError with a hint for each.

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
