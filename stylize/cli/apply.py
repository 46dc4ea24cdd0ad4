"""``stylize apply`` and ``stylize convert``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from stylize.config import ImageConfig


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("convert")(convert)


def apply(
    source: str = typer.Argument(..., metavar="IN", help="Photo to stylize ('-' reads stdin)."),
    target: str = typer.Argument(..., metavar="OUT", help="Where to write the result ('-' writes stdout); the extension picks the format."),
    model: str = typer.Option(None, "--model", "-m", help="Model name or file (default: the bundled multistyle26)."),
    style: str = typer.Option(None, "--style", "-s", help="Style name or index (default: the model's default style)."),
    mix: str = typer.Option(None, "--mix", help="Blend of styles, e.g. 3:0.5,12:0.5 (weights are normalised to sum 1)."),
    strength: float = typer.Option(1.0, "--strength", min=0.0, max=1.0, help="0 keeps the photo, 1 the full style."),
    preserve_color: bool = typer.Option(False, "--preserve-color", help="Keep the photo's colours, take the stylized luminance."),
    max_size: int = typer.Option(None, "--max-size", min=16, help="Downscale so the long side is at most this many pixels."),
    max_pixels: int = typer.Option(ImageConfig.max_pixels, "--max-pixels", min=1, help="Refuse images with more pixels (decompression-bomb guard)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16."),
    quality: int = typer.Option(ImageConfig.quality, "--quality", min=1, max=100, help="JPEG/WebP quality."),
    fmt: str = typer.Option(None, "--format", help="Output format (jpg, png, webp, tif, bmp); default from OUT's extension."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object describing the result."),
    tile: str = typer.Option("auto", "--tile", help="auto (stream in tiles only when memory is short), off, or a tile side in pixels."),
    memory_limit: str = typer.Option(None, "--memory-limit", help="Memory budget, e.g. 2GB or 512MiB (default: share of free memory)."),
) -> None:
    """Stylize one photo: stylize apply IN OUT."""
    from stylize.api import STDIO, Stylizer
    from stylize.errors import StylizeError
    from stylize.imaging import display_path

    if source != STDIO and os.path.isdir(source):
        raise StylizeError(f"{source} is a folder", "folder conversion needs an output folder: stylize apply DIR OUTDIR")
    stylizer = Stylizer.load(model, device=device, precision=precision)
    result = stylizer.apply_file(
        source,
        target,
        style=style,
        mix=mix,
        strength=strength,
        preserve_color=preserve_color,
        max_size=max_size,
        max_pixels=max_pixels,
        fmt=fmt,
        quality=quality,
        overwrite=overwrite,
        tile=tile,
        memory_limit=memory_limit,
    )
    # With OUT on stdout, the report goes to stderr so that it cannot corrupt the image bytes.
    to_stderr = target == STDIO
    if result.frames > 1:
        typer.echo(f"note: {display_path(source)} has {result.frames} frames or pages; only the first was stylized", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_dict()), err=to_stderr)
    else:
        width, height = result.size
        typer.echo(
            f"{result.input} -> {result.output}  ({width}x{height}, {result.model} style {result.style}, "
            f"{result.device} {result.precision}, {result.seconds:.2f} s)",
            err=to_stderr,
        )


def convert(
    source: Path = typer.Argument(..., metavar="IN", help="A foreign checkpoint (pytorch/examples .pth/.model) or a stylize model."),
    target: Path = typer.Argument(..., metavar="OUT", help="The .safetensors file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Convert a loadable model file to stylize's safetensors format (with provenance)."""
    from stylize.errors import StylizeError
    from stylize.imaging import check_output, display_path, same_file
    from stylize.modelfile import load_model, save_model

    if target.suffix.lower() != ".safetensors":
        raise StylizeError(f"output must end in .safetensors, got {target.name}", "e.g. stylize convert in.pth out.safetensors")
    if same_file(source, target):
        raise StylizeError(f"output {display_path(target)} is the input file", "choose another output path; inputs are never overwritten")
    check_output(target, overwrite=overwrite)
    model = load_model(source)
    model.provenance = {**model.provenance, "converted_from": source.name, "converter": "stylize convert"}
    save_model(model, target)
    typer.echo(f"{source} -> {target}  ({model.config.num_styles} style(s): {', '.join(model.styles[:8])})")
