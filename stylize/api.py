"""The Python API: load a style model once, apply it to tensors, PIL images, files and folders.

>>> from stylize import Stylizer
>>> stylizer = Stylizer.load()                      # bundled default model, best device
>>> stylizer.apply("photo.jpg", style="19").save("out.jpg")
>>> stylizer.apply("photo.jpg", mix={"3": 0.5, "12": 0.5}, strength=0.8)
>>> stylizer.apply_folder("photos/", "out/", progress=True)

Settings are the fields of :class:`~stylize.config.ApplyOptions` (and :class:`~stylize.config.FolderOptions` for
folders), given as keyword arguments or as an ``options`` object; the CLI builds the same objects from its flags.
The module is one class, :class:`Stylizer`, the whole public API; it runs a little past 400 lines for that reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from stylize import pipeline, runtime, styles
from stylize.config import ApplyOptions, FolderOptions, MixSpec, SheetOptions, TemporalOptions, VideoOptions
from stylize.devices import resolve_device, resolve_precision
from stylize.engine import Engine, check_compile_mode
from stylize.errors import StylizeError
from stylize.io import (
    DEFAULT_MODEL,
    bundled_path,
    check_output,
    encode_image,
    find_model,
    list_models,
    output_format,
    quantize,
    same_file,
    sha256_of,
    to_float,
    user_models_dir,
)
from stylize.network import StyleModel, check_size, load_model, load_predictor, save_model, style_code
from stylize.pipeline import FileRecord, FolderSummary, Job, Sheet, SheetTile, StyleWeights, run_folder
from stylize.pipeline import sheet as sheet_pipeline

if TYPE_CHECKING:
    from stylize.video import VideoResult

ImageInput = str | os.PathLike | Image.Image | torch.Tensor
STDIO = "-"



@dataclass(frozen=True)
class ApplyResult:
    """What one :meth:`Stylizer.apply_file` call did; the CLI prints it."""

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
    """A style model prepared for one device and precision.

    Longer than a screen because it is the whole public surface: one short method per thing a user does (styles,
    paintings, tensors and images, files, folders, videos), each delegating to the pipeline.
    """

    def __init__(self, model: StyleModel, engine: Engine, name: str) -> None:
        self.model = model
        self.engine = engine
        self.name = name
        self._embedder: styles.PaintingEmbedder | None = None

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        precision: str = "auto",
        compile: str = "auto",
        *,
        local_rank: int = 0,
    ) -> Stylizer:
        """Load ``model`` (a name or path; ``None`` = the bundled default) onto ``device`` in ``precision``.

        ``compile``: ``auto`` compiles an input size with ``torch.compile`` once it has run long enough to repay the
        compile (CUDA graphs on CUDA); ``always`` compiles every size on first use; ``never`` stays eager.
        ``local_rank`` picks the GPU for ``auto``/``cuda`` (one per process under torchrun).

        Loading also applies :func:`stylize.runtime.prepare_process` (glibc keeps freed memory; OpenMP waiting is set
        when torch is not imported yet), the settings that make the engine as fast here as in the CLI.
        """
        runtime.prepare_process()
        check_compile_mode(compile)
        path = find_model(None if model is None else str(model))
        style_model = load_model(path)
        torch_device = resolve_device(device, local_rank)
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

    @property
    def takes_paintings(self) -> bool:
        """Whether this is an arbitrary-style model: its style comes from paintings (``style_image``), not names."""
        return self.model.embedding_size > 0

    def style_index(self, style: str | int) -> int:
        """Index of a style given by name or by index (``"19"``, ``19`` or ``"starry_night"``)."""
        return styles.style_index(self.model, self.name, style)

    def style_weights(self, style: str | int | None = None, mix: MixSpec | None = None) -> torch.Tensor:
        """The ``(num_styles,)`` weight vector for one style or a convex mix of styles (normalised to sum 1)."""
        return styles.table_weights(self.model, self.name, style, mix)

    def describe_style(self, style: str | int | None = None, mix: MixSpec | None = None) -> str:
        return styles.describe_table_style(self.model, self.style_weights(style, mix))

    def embedder(self) -> styles.PaintingEmbedder:
        """The style predictor (bundled), loaded on first use onto this model's device."""
        if self._embedder is None:
            predictor = load_predictor(bundled_path(styles.PREDICTOR_FILE))
            self._embedder = styles.PaintingEmbedder(predictor, self.engine.device)
        return self._embedder

    def painting_embedding(self, style_image: styles.PaintingSpec) -> torch.Tensor:
        """The weighted mean style embedding ``(E,)`` of paintings (see :func:`stylize.styles.parse_paintings`)."""
        return self.embedder().paintings(styles.parse_paintings(style_image))

    def resolve(self, options: ApplyOptions) -> tuple[StyleWeights, ApplyOptions, str]:
        """The style weights ``options`` ask for, the options the pipeline then runs with, and a description of the style.

        With ``style_image`` and ``blend`` embedding (the default for paintings), a strength below 1 is spent on the
        style code of each photo, and the pipeline runs at full strength.
        """
        if options.style_image is None:
            if self.takes_paintings:
                raise StylizeError(f"model '{self.name}' takes the style of a painting", "pass `style_image=PAINTING`")
            if options.blend == "embedding":
                raise StylizeError("`blend=embedding` weakens a style predicted from a painting", "pass `style_image`, or `blend=pixels`")
            weights = self.style_weights(options.style, options.mix)
            return weights, options, styles.describe_table_style(self.model, weights)
        if not self.takes_paintings:
            raise StylizeError(
                f"model '{self.name}' has a fixed set of styles and cannot take a painting's",
                "use the arbitrary-style model (`model=arbitrary`), or `style` / `mix`",
            )
        if options.style is not None or options.mix is not None:
            raise StylizeError("give either `style_image` or `style` / `mix`, not both", "a painting's style is predicted from the image")
        paintings = styles.parse_paintings(options.style_image)
        embedding = self.embedder().paintings(paintings, options.max_pixels)
        description = styles.describe_paintings(paintings)
        if options.strength < 1.0 and options.blend in ("auto", "embedding"):
            return styles.blended_codes(self.embedder(), embedding, options.strength), options.replace(strength=1.0), description
        return style_code(embedding), options, description

    def save_style(
        self, target: str | os.PathLike, style_image: styles.PaintingSpec, name: str | None = None, overwrite: bool = False
    ) -> Path:
        """Save the style predicted from ``style_image`` as an ordinary one-style model file (``--model`` takes it).

        ``target`` is a ``.safetensors`` path, or a bare name: then the file goes into the per-user models folder, where
        model names are found. The style is called ``name`` (default: the file's stem).
        """
        if not self.takes_paintings:
            raise StylizeError(f"model '{self.name}' cannot predict a painting's style", "use the arbitrary-style model (`model=arbitrary`)")
        path = _model_path(target)
        if same_file(path, self.model.source):
            raise StylizeError(f"{path} is the model being used", "choose another output path")
        check_output(path, overwrite=overwrite)
        paintings = styles.parse_paintings(style_image)
        code = style_code(self.embedder().paintings(paintings))
        model = styles.fixed_style_model(self.model, code, name or path.stem, paintings, self.name)
        save_model(model, path)
        return path

    # -- applying ---------------------------------------------------------------------------------------------

    def apply(self, image: ImageInput, options: ApplyOptions | None = None, **settings: Any) -> Image.Image | torch.Tensor:
        """Stylize a path or PIL image (returns a PIL image) or a tensor (returns a tensor).

        Tensors are ``(3, H, W)`` or ``(B, 3, H, W)`` float in ``[0, 1]``; the result has the same shape, float32 on the
        CPU (``max_size`` does not apply to them). Images keep their alpha; a greyscale photo stays greyscale only with
        ``preserve_color``; ``max_size`` caps the long side (the result keeps the reduced size).
        """
        options = _options(ApplyOptions, options, settings)
        weights, options, _ = self.resolve(options)
        if isinstance(image, torch.Tensor):
            if image.dim() not in (3, 4) or image.shape[-3] != 3:
                raise StylizeError("image tensors must have shape (3, H, W) or (B, 3, H, W)", "convert the image to RGB first")
            batched = image if image.dim() == 4 else image.unsqueeze(0)
            check_size(*batched.shape[-2:])
            if callable(weights):  # a style that depends on each photo: see it as the pipeline's stages would
                weights = weights([quantize(photo).permute(2, 0, 1) for photo in batched])
            result = pipeline.forward(self.engine, batched.detach().float().cpu(), weights, options)
            return result if image.dim() == 4 else result[0]
        photo = pipeline.decode(image, options)
        result = pipeline.stylize(self.engine, [photo.pixels], weights, options)[0]
        return pipeline.finish(result, photo, "PNG", options)

    def apply_file(
        self, source: str | os.PathLike, target: str | os.PathLike, options: ApplyOptions | None = None, **settings: Any
    ) -> ApplyResult:
        """Read ``source``, stylize it and write ``target`` atomically; ``-`` means stdin or stdout.

        Every check that can fail (formats, existing output, output equal to input, the style) runs before the model
        does. An existing ``target`` is replaced only with ``overwrite``; if it is a symbolic link, the link itself is
        replaced by the new file and whatever it points to is never written.
        """
        started = time.perf_counter()
        options = _options(ApplyOptions, options, settings)
        source_text, target_text = str(source), str(target)
        fmt = _check_target(source_text, target_text, options)
        weights, options, description = self.resolve(options)
        photo = pipeline.decode(_source(source_text), options, name="stdin" if source_text == STDIO else None)
        result = pipeline.stylize(self.engine, [photo.pixels], weights, options)[0]
        final = pipeline.finish(result, photo, fmt, options)
        _emit(pipeline.encode(final, photo, fmt, options), target_text, options)
        return ApplyResult(
            input=source_text,
            output=target_text,
            size=final.size,
            model=self.name,
            style=description,
            device=self.device,
            precision=self.precision,
            seconds=time.perf_counter() - started,
            frames=photo.frames,
        )

    def sheet(
        self, image: str | os.PathLike | bytes | Image.Image, options: SheetOptions | None = None, *,
        on_tile: Callable[[int, int], None] | None = None, **settings: Any,
    ) -> Sheet:  # fmt: skip
        """A contact sheet: the photo ``image`` (a path, a file's bytes or a PIL image) in every style of this model, or
        the ``styles`` asked for, or with each of ``paintings`` (arbitrary-style models), as one labelled grid.

        Settings are the fields of :class:`~stylize.config.SheetOptions`; ``apply`` holds what is done to every tile
        (strength, preserve_color). ``on_tile(done, total)`` is called as batches of tiles finish.
        """
        started = time.perf_counter()
        options = _options(SheetOptions, options, settings)
        choices = self._sheet_choices(options)
        apply = options.apply.replace(max_size=options.size, work_size=None, style=None, mix=None, style_image=None)
        resolved = [self.resolve(apply.replace(**choice)) for _, _, choice in choices]
        photo = pipeline.decode(image, apply)
        results = sheet_pipeline.render(self.engine, photo.pixels, [weights for weights, _, _ in resolved], resolved[0][1], on_tile)
        pictures = [pipeline.finish(result, photo, "JPEG", apply) for result in results]
        labels = [label for label, _, _ in choices]
        styles_shown: list[str | None] = [style for _, style, _ in choices]
        if options.original:
            pictures.insert(0, pipeline.finish(to_float(photo.pixels), photo, "JPEG", apply))
            labels.insert(0, "photo")
            styles_shown.insert(0, None)
        grid, boxes = sheet_pipeline.compose(pictures, labels, options.columns, options.labels)
        tiles = [SheetTile(label, style, box) for label, style, box in zip(labels, styles_shown, boxes, strict=True)]
        return Sheet(grid, tiles, self.name, time.perf_counter() - started)

    def sheet_file(self, source: str | os.PathLike, target: str | os.PathLike, options: SheetOptions | None = None, **settings: Any) -> Sheet:
        """:meth:`sheet` from the file ``source`` to the file ``target`` (written atomically; ``-`` is stdin or stdout), with
        the checks of :meth:`apply_file` first: the output's format, an existing output, an output equal to the input."""
        options = _options(SheetOptions, options, settings)
        source_text, target_text = str(source), str(target)
        fmt = _check_target(source_text, target_text, options.apply)
        made = self.sheet(_source(source_text), options)
        _emit(encode_image(made.image, fmt, quality=options.apply.quality), target_text, options.apply)
        return made

    def _sheet_choices(self, options: SheetOptions) -> list[tuple[str, str, dict[str, Any]]]:
        """(label, style, the resolve() setting) of each tile of a sheet."""
        if self.takes_paintings:
            if not options.paintings:
                raise StylizeError(f"model '{self.name}' takes the style of a painting", "pass `paintings` (one tile each)")
            if options.styles is not None:
                raise StylizeError(f"model '{self.name}' has no named styles to choose with `styles`", "pass `paintings` (one tile each)")
            return [(styles.painting_name(p), getattr(p, "name", None) or os.fspath(p), {"style_image": p}) for p in options.paintings]
        if options.paintings:
            raise StylizeError(
                f"model '{self.name}' has a fixed set of styles and cannot take a painting's",
                "use the arbitrary-style model (`model=arbitrary`) for `paintings`, or `styles`",
            )
        indices = range(len(self.model.styles)) if options.styles is None else [self.style_index(style) for style in options.styles]
        return [(self.model.styles[i], self.model.styles[i], {"style": self.model.styles[i]}) for i in indices]

    def apply_folder(
        self,
        source_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        options: FolderOptions | None = None,
        *,
        progress: bool = False,
        report: str | os.PathLike | None = None,
        on_progress: Any = None,
        temporal: TemporalOptions | bool = True,
        video: VideoOptions | None = None,
        **settings: Any,
    ) -> FolderSummary:
        """Stylize every image under ``source_dir`` into ``out_dir`` (the tree mirrored), as ``stylize apply DIR OUTDIR``.

        Resumable (existing outputs are skipped unless ``overwrite``) and failure-tolerant (a bad file is recorded and
        the run goes on): see :mod:`stylize.pipeline.folder_run`. ``progress=True`` draws a ``tqdm.auto`` bar (a notebook widget
        in Jupyter); ``on_progress(total, record)`` is called per file instead if given. ``report`` writes the JSON
        report. Videos in the folder go through :meth:`apply_video` with ``temporal`` and ``video``. Returns the
        :class:`~stylize.pipeline.folder_run.FolderSummary` the CLI prints.
        """
        options = _options(FolderOptions, options, settings)
        weights, options, description = self.resolve(options)  # bad styles fail before any work
        info = {
            "model": self.name,
            "style": description,
            "device": self.device,
            "precision": self.precision,
        }
        bar = None
        if progress and on_progress is None:
            from tqdm.auto import tqdm

            bar = tqdm(unit="img", desc="stylize")
            on_progress = _tqdm_progress(bar)

        def convert_video(job: Job) -> FileRecord:
            started = time.perf_counter()
            try:
                # videos keep their container: the folder's format is for its images
                self.apply_video(job.source, job.target, options.replace(format=None), temporal=temporal, video=video)
            except StylizeError as exc:
                return FileRecord(str(job.source), str(job.target), "failed", exc.one_line(), time.perf_counter() - started)
            return FileRecord(str(job.source), str(job.target), "done", None, time.perf_counter() - started)

        try:
            return run_folder(self.engine, weights, source_dir, out_dir, options, on_progress, report, info, convert_video)
        finally:
            if bar is not None:
                bar.close()

    def apply_video(
        self,
        source: str | os.PathLike,
        target: str | os.PathLike,
        options: ApplyOptions | None = None,
        *,
        temporal: TemporalOptions | bool = True,
        video: VideoOptions | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        on_progress: Callable[[int, int | None], None] | None = None,
        **settings: Any,
    ) -> VideoResult:
        """Stylize every frame of the video ``source`` into ``target``, with its sound, subtitles and timestamps kept.

        Frames run through the same pipeline as photos (every apply setting works; ``max_size`` scales frames on
        decode). ``temporal`` keeps frames stable from one to the next (:mod:`stylize.pipeline.temporal`; True: the default
        :class:`~stylize.config.TemporalOptions`, False: each frame on its own). ``video`` chooses codec, quality and
        container (:class:`~stylize.config.VideoOptions`). The output appears only when complete; a run that stops is
        resumed by the same call (:func:`stylize.video.transcode`). ``progress=True`` draws a ``tqdm.auto`` bar;
        ``on_progress(done_frames, total_frames)`` is called instead if given.
        """
        from stylize.pipeline import FrameStylizer
        from stylize.video import transcode

        options = _options(ApplyOptions, options, settings)
        weights, options, description = self.resolve(options)
        video = video or VideoOptions()
        if options.max_size:
            video = dataclasses.replace(video, max_size=options.max_size)
        if options.format and video.format is None:
            video = dataclasses.replace(video, format=options.format)
        settings_of_temporal = TemporalOptions() if temporal is True else temporal or None
        processor = FrameStylizer(self.engine, weights, options, settings_of_temporal)
        fingerprint = json.dumps(
            {
                "model": sha256_of(Path(self.model.source)) if self.model.source else self.name,
                "style": description,
                "weights": None if callable(weights) else [round(float(w), 7) for w in weights],
                "options": [options.strength, options.blend, options.preserve_color, options.work_size],
                "temporal": None if settings_of_temporal is None else [dataclasses.asdict(settings_of_temporal), FrameStylizer.STATE_VERSION],
                "precision": self.precision,
            },
            sort_keys=True,
        )
        bar = None
        if progress and on_progress is None:
            from tqdm.auto import tqdm

            bar = tqdm(unit="frame", desc="stylize")

            def on_progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

        try:
            return transcode(
                source, target, processor, video, batch_size=batch_size or (8 if self.engine.device.type == "cuda" else 4),
                overwrite=options.overwrite, fingerprint=fingerprint, on_progress=on_progress,
                check_frames=processor.check_frames,
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()


def model_records() -> list[dict[str, Any]]:
    """One record per model that ``model`` names (``stylize models --json``, the server's ``GET /v1/models``): name,
    origin, path, styles (empty for an arbitrary-style model), any_painting, default_style, default, licence; or name,
    origin, path and the one-line error of a file that does not load."""
    records = []
    for entry in list_models():
        try:
            model = load_model(entry.path)
            record = {
                "name": entry.name,
                "origin": entry.origin,
                "path": str(entry.path),
                "styles": [] if model.embedding_size else model.styles,
                "any_painting": bool(model.embedding_size),
                "default_style": model.default_style,
                "default": entry.name == DEFAULT_MODEL,
                "licence": model.provenance.get("licence"),
            }
        except StylizeError as exc:
            record = {"name": entry.name, "origin": entry.origin, "path": str(entry.path), "error": exc.one_line()}
        records.append(record)
    return records


def _check_target(source: str, target: str, options: ApplyOptions) -> str:
    """The output format for ``target``; refuses an output that is the input, or exists without ``overwrite``."""
    fmt = output_format(None if target == STDIO else target, options.format)
    if target != STDIO:
        if source != STDIO and same_file(source, target):
            raise StylizeError(f"output {target} is the input file", "choose another output path; inputs are never overwritten")
        check_output(target, overwrite=options.overwrite)
    return fmt


def _source(source: str) -> Any:
    """What the decoder reads for ``source``: stdin's bytes for ``-``, else the path."""
    return sys.stdin.buffer.read() if source == STDIO else source


def _emit(encoded: bytes, target: str, options: ApplyOptions) -> None:
    """Write ``encoded`` to stdout (``-``) or atomically to the file ``target``."""
    if target == STDIO:
        sys.stdout.buffer.write(encoded)
        sys.stdout.buffer.flush()
    else:
        pipeline.write(encoded, target, options)


def _model_path(target: str | os.PathLike) -> Path:
    """A model file path, or a bare name put into the per-user models folder."""
    text = os.fspath(target)
    if text.lower().endswith(".safetensors"):
        return Path(text)
    if any(sep in text for sep in ("/", "\\")) or Path(text).suffix:
        raise StylizeError(f"a model file must end in .safetensors, got {text}", "e.g. monet.safetensors, or a bare name such as monet")
    return user_models_dir() / f"{text}.safetensors"


def _options(kind: type, options: ApplyOptions | None, settings: dict[str, Any]) -> Any:
    """``options`` with ``settings`` applied, or ``kind(**settings)``; unknown settings are an error."""
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if options is None:
        return kind(**settings)
    if not isinstance(options, kind):
        options = kind(**{f.name: getattr(options, f.name) for f in fields(options) if f.name in known})
    return options.replace(**settings) if settings else options


def _tqdm_progress(bar: Any):
    def on_progress(total: int, record: FileRecord | None) -> None:
        if record is None:
            bar.reset(total=total)
        else:
            bar.update(1)
            if record.status == "failed":
                bar.write(f"failed {record.input}: {record.reason}")

    return on_progress
