#!/usr/bin/env python3
"""The picture of the bundled painting models in docs/: two bundled photos, each as it is and through the four
painting models (``--model starry_night`` ...), laid out as a labelled grid::

    python scripts/docs/painting_models.py [--out docs/painting_models.jpg] [--size 320]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from stylize import Stylizer  # noqa: E402
from stylize.io import BUNDLED_PHOTOS_DIR, write_atomic  # noqa: E402
from stylize.pipeline.sheet import compose  # noqa: E402

MODELS = ("starry_night", "the_scream", "wave", "composition_vii")
PHOTOS = ("chelsea.jpg", "coffee.jpg")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "painting_models.jpg")
    parser.add_argument("--size", type=int, default=320, help="long side of each picture")
    args = parser.parse_args()
    stylizers = [Stylizer.load(name) for name in MODELS]
    pictures, labels = [], []
    for name in PHOTOS:
        with Image.open(BUNDLED_PHOTOS_DIR / name) as opened:
            photo = opened.convert("RGB")
        photo.thumbnail((args.size, args.size), Image.Resampling.LANCZOS)
        pictures.append(photo)
        labels.append(Path(name).stem)
        for model, stylizer in zip(MODELS, stylizers, strict=True):
            pictures.append(stylizer.apply(photo))
            labels.append(model)
    sheet, _ = compose(pictures, labels, columns=1 + len(MODELS))
    data = io.BytesIO()
    sheet.save(data, format="JPEG", quality=88)
    write_atomic(data.getvalue(), args.out, overwrite=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {len(data.getvalue()) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
