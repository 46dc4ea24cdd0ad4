"""``stylize sheet PHOTO OUT``: every style of a model (or each painting given) on one photo, as a labelled grid."""

from __future__ import annotations

import json

import typer

from stylize.config import ApplyOptions, SheetOptions

_SHEET = SheetOptions()
_APPLY = ApplyOptions()


def register(app: typer.Typer) -> None:
    app.command("sheet")(sheet)


def sheet(
    source: str = typer.Argument(..., metavar="PHOTO", help="The photo to show in every style ('-' reads stdin)."),
    target: str = typer.Argument(..., metavar="OUT", help="The sheet image to write ('-' writes stdout; the extension picks the format)."),
    model: str = typer.Option(None, "--model", "-m", help="Model name or file (default: the bundled multistyle26; with -p: arbitrary)."),
    paintings: list[str] = typer.Option(
        [], "--paintings", "-p", metavar="PAINTING", help="A painting whose predicted style makes one tile; repeat for several."
    ),
    styles: str = typer.Option(None, "--styles", help="Only these styles, e.g. 0,7,19 (default: every style of the model)."),
    size: int = typer.Option(_SHEET.size, "--size", help="Long side of each tile in pixels."),
    columns: int = typer.Option(None, "--columns", help="Tiles per row (default: about square)."),
    original: bool = typer.Option(_SHEET.original, "--original/--no-original", help="Show the photo itself as the first tile."),
    labels: bool = typer.Option(_SHEET.labels, "--labels/--no-labels", help="Write each style's name or index under its tile."),
    strength: float = typer.Option(_APPLY.strength, "--strength", min=0.0, max=1.0, help="0 keeps the photo, 1 the full style."),
    preserve_color: bool = typer.Option(False, "--preserve-color", help="Keep the photo's colours, take the stylized luminance."),
    max_pixels: int = typer.Option(_APPLY.max_pixels, "--max-pixels", min=1, help="Refuse images with more pixels (decompression-bomb guard)."),
    quality: int = typer.Option(_APPLY.quality, "--quality", min=1, max=100, help="JPEG/WebP quality."),
    fmt: str = typer.Option(None, "--format", help="Output format (jpg, png, webp, tif, bmp); default: OUT's extension."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object listing the tiles."),
) -> None:
    """Show a photo in every style of a model (or with each painting given) as one labelled grid image."""
    from stylize.api import STDIO, Stylizer
    from stylize.cli.apply import ARBITRARY_MODEL
    from stylize.io import display_path

    apply = ApplyOptions(
        strength=strength, preserve_color=preserve_color, max_pixels=max_pixels, quality=quality, format=fmt, overwrite=overwrite
    )
    options = SheetOptions(size=size, columns=columns, styles=styles, paintings=tuple(paintings), original=original, labels=labels, apply=apply)
    if paintings and model is None:
        model = ARBITRARY_MODEL
    stylizer = Stylizer.load(model, device=device, precision=precision, compile="never")
    made = stylizer.sheet_file(source, target, options)
    to_stderr = target == STDIO  # the report must not corrupt the image bytes on stdout
    if as_json:
        typer.echo(json.dumps({"input": source, "output": target, **made.to_dict()}), err=to_stderr)
        return
    width, height = made.image.size
    typer.echo(
        f"{display_path(source)} -> {display_path(target)}  ({len(made.tiles)} tiles, {width}x{height}, {made.model}, {made.seconds:.2f} s)",
        err=to_stderr,
    )
