#!/usr/bin/env python3
"""Marks bound to the frame: what a model paints at the corners and edges of every output, whatever the photo.

Two measurements per model, fp32 on the CPU:

- **marks**: every photo of ``--photos`` is resized to ``MARK_SIZE`` and stylized as it is and flipped each way. A mark
  bound to the frame (a blob in a corner, a line along an edge) is in every output at the same place and survives
  their average; a picture's own detail averages out. Reported: the RMS of the average's high-pass, in 1/255, over the
  four ``CORNER`` x ``CORNER`` corners, the ``EDGE``-pixel band along the edges, and the interior.
- **cut**: each of the last ``--held-out`` photos is stylized whole, then with its first ``CUT`` rows and columns cut
  off, then with its last ``CUT``. A network cannot know what lies beyond an edge, so the outputs differ at the cut
  photo's new corner and edges, where the whole photo's output paints the same place from more of the picture.
  Reported: mean |difference| in 1/255 in the ``CORNER`` x ``CORNER`` corner, the ``EDGE``-pixel band along the new
  edges and the interior (pixels at least ``INTERIOR`` from every side), and the cut scores: corner and edge over
  interior. The scores also grow when a network's interior is steadier (a network without instance norm in its
  encoder moves less inside when the frame moves), so the target compares the differences themselves.

Target: every model's marks and cut differences (corner and edge) within ``--limit`` (1.2) times the 26-style
network's, measured in the same run. Exits 1 when a model misses it::

    python scripts/bench/bench_borders.py --photos ../shared/data/content/sun80
    python scripts/bench/bench_borders.py --photos DIR --models wave arbitrary:wave --size 384
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CUT = 32  # rows and columns cut off: more than the network's receptive field reaches into its border handling
CORNER = 12
EDGE = 4
INTERIOR = 32
REFERENCE = "multistyle26"
DEFAULT_MODELS = [REFERENCE, "the_scream", "wave", "starry_night", "composition_vii", "arbitrary:starry_night", "arbitrary:wave",
                  "arbitrary:the_scream", "arbitrary:composition_vii"]

Stylize = Callable[[torch.Tensor], torch.Tensor]  # (3, H, W) or (B, 3, H, W) in [0, 1] -> the same


def cut_differences(stylize: Stylize, photo: torch.Tensor) -> tuple[float, float, float]:
    """``(corner, edge, interior)`` mean |difference| in 1/255 between ``stylize``'s output (``(3, H, W)`` in ``[0, 1]``
    -> the same) of a cut ``photo`` and its output of the whole photo, cut alike: the mean of the cut at the top-left
    and the cut at the bottom-right. ``photo`` needs at least ``CUT + 2 * INTERIOR + 1`` pixels a side."""
    whole = stylize(photo)
    values = []
    for cut, reference, turn in (
        (photo[:, CUT:, CUT:], whole[:, CUT:, CUT:], False),
        (photo[:, :-CUT, :-CUT], whole[:, :-CUT, :-CUT], True),  # new corner at the bottom-right: turned to the top-left
    ):
        difference = (stylize(cut) - reference).abs().mean(0) * 255  # (H, W)
        if turn:
            difference = difference.flip(0, 1)
        band = torch.cat([difference[:EDGE].flatten(), difference[EDGE:, :EDGE].flatten()])
        values.append((difference[:CORNER, :CORNER].mean(), band.mean(), difference[INTERIOR:-INTERIOR, INTERIOR:-INTERIOR].mean()))
    return tuple(float(sum(v[i] for v in values) / len(values)) for i in range(3))  # type: ignore[return-value]


def border_scores(stylize: Stylize, photo: torch.Tensor) -> tuple[float, float]:
    """The cut scores: ``(corner, edge)`` differences over the interior's (1.0: borders as steady as the interior)."""
    corner, edge, interior = cut_differences(stylize, photo)
    return corner / interior, edge / interior


MARK_SIZE = (288, 384)  # every photo is resized to this, so that the outputs can be averaged position by position
MARK_BLUR = 8  # radius of the box blur whose difference is the high-pass: marks are finer than this, photos' means coarser


def frame_marks(stylize: Stylize, photos: list[torch.Tensor]) -> tuple[float, float, float]:
    """``(corner, edge, interior)``: what ``stylize``'s outputs share wherever they come from, in 1/255.

    Each photo is resized to :data:`MARK_SIZE` and stylized as it is and flipped each way (the flips cancel the photos'
    own tendencies, sky at the top, ground below). A mark bound to the frame is in every output at the same place, so it
    survives the average of the outputs; a picture's own detail averages out. Reported: the RMS of the average's
    high-pass (grey level minus its local mean) over the four ``CORNER`` x ``CORNER`` corners, over the ``EDGE``-pixel
    band along all four edges, and over the interior (what the average keeps of everything else).
    """
    height, width = MARK_SIZE
    total = torch.zeros(height, width)
    count = 0
    for photo in photos:
        fitted = F.interpolate(photo[None], size=MARK_SIZE, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
        views = torch.stack([fitted, fitted.flip(-1), fitted.flip(-2), fitted.flip(-2, -1)])  # (4, 3, H, W): one batch
        total += stylize(views).mean(1).sum(0)  # grey levels summed (H, W)
        count += len(views)
    mean = total / count
    padded = F.pad(mean[None, None], (MARK_BLUR,) * 4, mode="replicate")
    high = (mean - F.avg_pool2d(padded, 2 * MARK_BLUR + 1, stride=1)[0, 0]) * 255

    def rms(values: torch.Tensor) -> float:
        return float(values.pow(2).mean().sqrt())

    c = CORNER
    corners = torch.stack([high[:c, :c], high[:c, -c:], high[-c:, :c], high[-c:, -c:]])
    band = torch.cat([high[:EDGE].flatten(), high[-EDGE:].flatten(), high[EDGE:-EDGE, :EDGE].flatten(), high[EDGE:-EDGE, -EDGE:].flatten()])
    return rms(corners), rms(band), rms(high[INTERIOR:-INTERIOR, INTERIOR:-INTERIOR])


def model_stylizer(spec: str, device: str = "cpu") -> Stylize:
    """``NAME`` (a model's default style), ``NAME:STYLE``, or ``arbitrary:PAINTING`` (a bundled painting's name or a
    path) as a function of a photo or a batch of them; fp32, eager."""
    from stylize import Stylizer
    from stylize.io.resources import BUNDLED_STYLES_DIR

    name, _, style = spec.partition(":")
    stylizer = Stylizer.load(name, device=device, precision="fp32", compile="never")
    options: dict[str, str] = {}
    if stylizer.takes_paintings:
        painting = Path(style or "starry_night")
        options["style_image"] = str(painting if painting.suffix else BUNDLED_STYLES_DIR / f"{painting}.jpg")
    elif style:
        options["style"] = style

    def run(photos: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return stylizer.apply(photos, **options) if photos.dim() == 4 else stylizer.apply(photos[None], **options)[0]

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "content" / "sun80")
    parser.add_argument("--held-out", type=int, default=8, help="cut test: the last N photos of --photos, by name")
    parser.add_argument("--size", type=int, default=512, help="cut test: long side of each photo")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="NAME, NAME:STYLE or arbitrary:PAINTING")
    parser.add_argument("--limit", type=float, default=1.2, help="target: at most this times the 26-style network's figures")
    args = parser.parse_args()

    from quality_scoring import load_photo

    from stylize.runtime import prepare_process
    from stylize.training.data import find_photos

    prepare_process()
    paths = find_photos(args.photos)[0]
    held_out = [load_photo(path, args.size)[0] for path in paths[-args.held_out :]]
    every = [load_photo(path, max(MARK_SIZE))[0] for path in paths]
    models = args.models if REFERENCE in args.models else [REFERENCE, *args.models]
    print(f"cut test: {len(held_out)} held-out photos of {args.photos.name} at long side {args.size}, cut {CUT}, corner {CORNER}, "
          f"edge {EDGE}, interior from {INTERIOR}; marks: the {len(every)} photos x 4 flips at {MARK_SIZE[1]}x{MARK_SIZE[0]}; fp32, CPU")
    rows: dict[str, tuple[float, ...]] = {}
    for spec in models:
        stylize = model_stylizer(spec)
        cuts = [cut_differences(stylize, photo) for photo in held_out]
        corner, edge, interior = (statistics.fmean(c[i] for c in cuts) for i in range(3))
        ratios = (statistics.fmean(c[0] / c[2] for c in cuts), statistics.fmean(c[1] / c[2] for c in cuts))
        rows[spec] = (*frame_marks(stylize, every), corner, edge, interior, *ratios)
        print(f"  {spec}: " + ", ".join(f"{value:.2f}" for value in rows[spec]), flush=True)
    limits = [args.limit * rows[REFERENCE][i] for i in (0, 1, 3, 4)]
    print("\n| model | marks: corner | edge | interior | cut: corner | edge | interior | cut scores: corner | edge | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    missed = 0
    for spec, row in rows.items():
        met = all(row[i] <= limit for i, limit in zip((0, 1, 3, 4), limits, strict=True))
        missed += spec != REFERENCE and not met
        verdict = "reference" if spec == REFERENCE else ("met" if met else "not met")
        print(f"| {spec} | " + " | ".join(f"{value:.2f}" for value in row) + f" | {verdict} |")
    print(f"\nmarks and cut differences in 1/255; target: marks corner <= {limits[0]:.2f}, edge <= {limits[1]:.2f}; cut "
          f"corner <= {limits[2]:.2f}, edge <= {limits[3]:.2f} ({args.limit} x {REFERENCE}). Cut scores (corner or edge over "
          "interior) for comparison: they also grow when a network's interior is steadier.")
    if missed:
        print(f"{missed} model(s) miss the target")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
