"""Where bundled files live: inside the installed package, or in the source checkout.

The wheel copies the repository's top-level ``models/`` and ``weights/`` folders to ``stylize/_bundled/``
(see ``pyproject.toml``); a source checkout has them next to the package. Package data that is small enough
to live inside ``stylize/`` itself (``stylize/data/``) is found relative to this file.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
#: Bundled public-domain photos used when training is started without --content-dir.
BUNDLED_PHOTOS_DIR = DATA_DIR / "photos"
#: Bundled public-domain paintings that ``--style NAME`` can name without a path.
BUNDLED_STYLES_DIR = DATA_DIR / "styles"


def bundled_folder(name: str) -> Path:
    """The folder that holds bundled ``name`` ("models" or "weights"): installed copy first, then the checkout's.

    Returns the installed location when neither exists, so error messages name where the file was expected.
    """
    installed = PACKAGE_DIR / "_bundled" / name
    if installed.is_dir():
        return installed
    checkout = PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    return installed
