"""Contact sheets: one photo under many styles, stylized in batches and laid out as a labelled grid.

:func:`render` runs the photo through the engine once per style, several styles to a batch (each batch row has its
own style weights, so a batch of one photo under four styles is one forward pass); :func:`compose` lays the tiles
out in rows with a label under each. :meth:`stylize.api.Stylizer.sheet` chooses the styles and calls both; the CLI's
``stylize sheet`` and the server's ``POST /v1/sheet`` call that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from stylize.config import ApplyOptions
from stylize.engine import Engine
from stylize.network import padded_size
from stylize.pipeline import stages
from stylize.pipeline.folder_run import batch_limit
from stylize.pipeline.stages import StyleWeights

#: Pixels between tiles and around the grid.
GAP = 8
BACKGROUND = (255, 255, 255)
TEXT = (40, 40, 40)


@dataclass(frozen=True)
class SheetTile:
    """One tile of a sheet: its label, the style it shows, and where its picture is in the sheet."""

    label: str  # the text under the tile: a style's name (an index for multistyle26), a painting's name, or "photo"
    style: str | None  # the style as `style` or `style_image` names it; None for the photo itself
    box: Box  # where the picture is in the sheet, in pixels

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "style": self.style, "box": list(self.box)}


@dataclass
class Sheet:
    """A finished sheet: the grid image and its tiles in reading order."""

    image: Image.Image
    tiles: list[SheetTile]
    model: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.image.size),
            "model": self.model,
            "seconds": round(self.seconds, 4),
            "tiles": [tile.to_dict() for tile in self.tiles],
        }


def render(
    engine: Engine,
    pixels: torch.Tensor,
    weights: Sequence[StyleWeights],
    options: ApplyOptions,
    on_tile: Callable[[int, int], None] | None = None,
) -> list[torch.Tensor]:
    """The ``(3, H, W)`` uint8 photo ``pixels`` under each of ``weights``: ``(3, H, W)`` float results in ``[0, 1]``.

    Styles share a batch up to :func:`stylize.pipeline.folder_run.batch_limit`; ``on_tile(done, total)`` is called after
    each batch.
    """
    rows = [w([pixels]) if callable(w) else w[None] for w in weights]  # each (1, S)
    table = torch.cat(rows)  # (N, S): one row of style weights per tile
    limit = batch_limit(padded_size(pixels.shape[1], pixels.shape[2]), engine.device)
    results: list[torch.Tensor] = []
    for start in range(0, len(rows), limit):
        chunk = table[start : start + limit]
        results += stages.stylize(engine, [pixels] * len(chunk), chunk, options)
        if on_tile is not None:
            on_tile(len(results), len(rows))
    return results


Box = tuple[int, int, int, int]  # left, top, width, height


def compose(
    pictures: Sequence[Image.Image], labels: Sequence[str], columns: int | None = None, show_labels: bool = True
) -> tuple[Image.Image, list[Box]]:
    """Lay equal-sized ``pictures`` out in rows of ``columns`` (None: about square) with ``labels`` under them.

    Returns the RGB sheet and each picture's box (left, top, width, height).
    """
    width, height = pictures[0].size
    count = len(pictures)
    columns = min(count, columns or math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    font_size = max(11, min(28, width // 14))
    font = ImageFont.load_default(size=font_size)
    label_height = font_size + GAP if show_labels else 0
    cell_w, cell_h = width + GAP, height + label_height + GAP
    sheet = Image.new("RGB", (GAP + columns * cell_w, GAP + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    boxes = []
    for index, (picture, label) in enumerate(zip(pictures, labels, strict=True)):
        left, top = GAP + (index % columns) * cell_w, GAP + (index // columns) * cell_h
        sheet.paste(picture.convert("RGB"), (left, top))
        boxes.append((left, top, width, height))
        if show_labels:
            text = _fit(draw, label, font, width)
            text_width = draw.textlength(text, font=font)
            draw.text((left + (width - text_width) / 2, top + height + GAP // 2), text, fill=TEXT, font=font)
    return sheet, boxes


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
