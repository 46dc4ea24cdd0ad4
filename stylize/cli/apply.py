"""``stylize apply`` (one photo, stdin/stdout, or a folder) and ``stylize convert``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from stylize.config import ApplyOptions, FolderOptions, VideoOptions

_APPLY = ApplyOptions()
_FOLDER = FolderOptions()


#: The model that takes any painting as the style (--style-image without --model).
ARBITRARY_MODEL = "arbitrary"


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("save-style")(save_style)
    app.command("convert")(convert)


def apply(
    source: str = typer.Argument(..., metavar="IN", help="Photo to stylize ('-' reads stdin), or a folder of photos."),
    target: str = typer.Argument(..., metavar="OUT", help="Output file ('-' writes stdout; the extension picks the format), or an output folder."),
    model: str = typer.Option(None, "--model", "-m", help="Model name or file (default: the bundled multistyle26)."),
    style: str = typer.Option(None, "--style", "-s", help="Style name or index (default: the model's default style)."),
    mix: str = typer.Option(None, "--mix", help="Blend of styles, e.g. 3:0.5,12:0.5 (weights are normalised to sum 1)."),
    style_image: list[str] = typer.Option(
        [], "--style-image", "-p", metavar="PAINTING[:WEIGHT]",
        help="Any painting as the style (the arbitrary-style model predicts it); repeat to blend several, e.g. a.jpg:0.7.",
    ),  # fmt: skip
    strength: float = typer.Option(_APPLY.strength, "--strength", min=0.0, max=1.0, help="0 keeps the photo, 1 the full style."),
    blend: str = typer.Option(_APPLY.blend, "--blend", help="How --strength weakens the style: pixels, embedding (paintings), or auto."),
    work_size: int = typer.Option(
        None, "--work-size", min=64, help="Long side the network paints at: sets the stroke size relative to the image (default: full size)."
    ),
    preserve_color: bool = typer.Option(False, "--preserve-color", help="Keep the photo's colours, take the stylized luminance."),
    max_size: int = typer.Option(None, "--max-size", min=16, help="Downscale so the long side is at most this many pixels."),
    max_pixels: int = typer.Option(_APPLY.max_pixels, "--max-pixels", min=1, help="Refuse images with more pixels (decompression-bomb guard)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16."),
    compile: str = typer.Option("auto", "--compile", help="auto (torch.compile a size once it repays; CUDA graphs on CUDA), always or never."),
    quality: int = typer.Option(_APPLY.quality, "--quality", min=1, max=100, help="JPEG/WebP quality."),
    fmt: str = typer.Option(
        None, "--format", help="Output format (jpg, png, webp, tif, bmp; folders: same; videos: a container such as mkv); default: OUT's extension."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object describing the result."),
    recursive: bool = typer.Option(_FOLDER.recursive, "--recursive/--no-recursive", help="Folders: include subfolders (mirrored under OUTDIR)."),
    ext: str = typer.Option(None, "--ext", help="Folders: extensions to convert, e.g. jpg,png (default: jpg,jpeg,png,webp,tif,tiff,bmp)."),
    suffix: str = typer.Option(_FOLDER.suffix, "--suffix", help="Folders: text appended to each output's stem, e.g. _styled."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Folders: images of equal size run together (default 4 on CPU, 8 on CUDA)."),
    workers: int = typer.Option(None, "--workers", min=0, help="Folders: decoding processes (default: half the CPUs; 0 decodes in-process)."),
    report: str = typer.Option(None, "--report", help="Folders: write a JSON report (one record per file) to this file."),
    tile: str = typer.Option(str(_APPLY.tile), "--tile", help="auto (stream in tiles only when memory is short), off, or a tile side in pixels."),
    temporal: bool = typer.Option(True, "--temporal/--no-temporal", help="Videos: keep frames stable from one to the next."),
    codec: str = typer.Option(None, "--codec", help="Videos: libx264 (default), libx265 or libvpx-vp9."),
    crf: int = typer.Option(None, "--crf", min=0, max=63, help="Videos: constant rate factor, lower is better (default 18 for x264)."),
    preset: str = typer.Option(None, "--preset", help="Videos: encoder speed preset, ultrafast ... veryslow (default veryfast for x264)."),
    memory_limit: str = typer.Option(None, "--memory-limit", help="Memory budget, e.g. 2GB or 512MiB (default: share of free memory)."),
) -> int | None:
    """Stylize one photo or video (stylize apply IN OUT) or a folder of them (stylize apply DIR OUTDIR)."""
    from stylize.api import STDIO, Stylizer
    from stylize.errors import StylizeError
    from stylize.io import display_path
    from stylize.pipeline import is_video

    common = {
        "style": style, "mix": mix, "style_image": style_image or None, "strength": strength, "blend": blend,
        "preserve_color": preserve_color, "max_size": max_size, "work_size": work_size, "max_pixels": max_pixels,
        "quality": quality, "overwrite": overwrite, "tile": tile, "memory_limit": memory_limit,
    }  # fmt: skip
    if style_image and model is None:
        model = ARBITRARY_MODEL
    video_options = VideoOptions(codec=codec, crf=crf, preset=preset)
    if source != STDIO and os.path.isdir(source):
        from stylize.cli.folder import apply_folder
        from stylize.io import OUTPUT_EXTENSIONS

        hint = "folder conversion needs an output folder: stylize apply DIR OUTDIR"
        if target == STDIO:
            raise StylizeError(f"{display_path(source)} is a folder", hint)
        # OUT named like an image file (and not an existing folder) means IN was meant to be a file: say so rather
        # than create a folder called out.png.
        if Path(target).suffix.lower() in OUTPUT_EXTENSIONS and not os.path.isdir(target):
            raise StylizeError(f"{display_path(source)} is a folder, but OUT {display_path(target)} names an image file", hint)
        options = FolderOptions(
            **common, format=fmt or "same", suffix=suffix, recursive=recursive, extensions=ext or _FOLDER.extensions,
            batch_size=batch_size, workers=workers,
        )  # fmt: skip
        return apply_folder(source, target, model=model, device=device, precision=precision, compile=compile, options=options,
                            report=report, as_json=as_json, temporal=temporal, video=video_options)  # fmt: skip
    if source != STDIO and is_video(source):
        from stylize.cli.video import apply_video

        options = ApplyOptions(**common)
        return apply_video(source, target, model=model, device=device, precision=precision, options=options, video=video_options,
                           temporal=temporal, batch_size=batch_size, as_json=as_json)  # fmt: skip
    folder_only = {"--ext": ext, "--suffix": suffix, "--workers": workers, "--report": report, "--batch-size": batch_size}
    given = [name for name, value in folder_only.items() if value]
    if given:
        raise StylizeError(f"{', '.join(given)} only apply to folders", "stylize apply DIR OUTDIR ... converts a folder")
    options = ApplyOptions(**common, format=fmt)
    stylizer = Stylizer.load(model, device=device, precision=precision, compile=compile)
    result = stylizer.apply_file(source, target, options)
    # With OUT on stdout, the report goes to stderr so that it cannot corrupt the image bytes.
    to_stderr = target == STDIO
    if result.frames > 1:
        typer.echo(f"note: {display_path(source)} has {result.frames} frames or pages; only the first was stylized", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_dict()), err=to_stderr)
    else:
        width, height = result.size
        typer.echo(
            f"{display_path(result.input)} -> {display_path(result.output)}  ({width}x{height}, {result.model} style {result.style}, "
            f"{result.device} {result.precision}, {result.seconds:.2f} s)",
            err=to_stderr,
        )
    return None


def convert(
    source: Path = typer.Argument(..., metavar="IN", help="A foreign checkpoint (pytorch/examples .pth/.model) or a stylize model."),
    target: Path = typer.Argument(..., metavar="OUT", help="The .safetensors file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Convert a loadable model file to stylize's safetensors format (with provenance)."""
    from stylize.errors import StylizeError
    from stylize.io import check_output, display_path, same_file
    from stylize.network import load_model, save_model

    if target.suffix.lower() != ".safetensors":
        raise StylizeError(f"output must end in .safetensors, got {target.name}", "e.g. stylize convert in.pth out.safetensors")
    if same_file(source, target):
        raise StylizeError(f"output {display_path(target)} is the input file", "choose another output path; inputs are never overwritten")
    check_output(target, overwrite=overwrite)
    model = load_model(source)
    model.provenance = {**model.provenance, "converted_from": source.name, "converter": "stylize convert"}
    save_model(model, target)
    typer.echo(f"{source} -> {target}  ({model.config.num_styles} style(s): {', '.join(model.styles[:8])})")


def save_style(
    target: str = typer.Argument(..., metavar="OUT", help="Model file to write (.safetensors), or a bare name for the per-user models folder."),
    style_image: list[str] = typer.Option(
        ..., "--style-image", "-p", metavar="PAINTING[:WEIGHT]", help="The painting whose style to save; repeat to blend several."
    ),
    name: str = typer.Option(None, "--name", help="The style's name inside the model (default: OUT's stem)."),
    model: str = typer.Option(ARBITRARY_MODEL, "--model", "-m", help="The arbitrary-style model that predicts the style."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Save a painting's predicted style as an ordinary one-style model: stylize save-style monet -p painting.jpg."""
    from stylize.api import Stylizer

    stylizer = Stylizer.load(model, device=device, compile="never")
    path = stylizer.save_style(target, style_image, name=name, overwrite=overwrite)
    typer.echo(f"saved {path}  (use it with --model {path.stem if path.parent.name == 'models' else path})")
