"""Where bundled files live, and their integrity check.

In an installed wheel the top-level ``models/`` and ``weights/`` folders are packaged as
``stylize/_bundled/models`` and ``stylize/_bundled/weights`` and found through package resources; in a source
checkout they are found next to the package. Every bundled file is verified against the SHA-256 recorded here
before use, so a damaged or replaced file is refused instead of silently producing wrong images.
"""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import resources
from pathlib import Path

from stylize.errors import EXIT_FAILURE, StylizeError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # stylize/
DATA_DIR = PACKAGE_DIR / "data"
#: Bundled public-domain photos used when training is started without --content-dir (and by scripts/demo.sh).
BUNDLED_PHOTOS_DIR = DATA_DIR / "photos"
#: Bundled public-domain paintings that ``--style NAME`` can name without a path.
BUNDLED_STYLES_DIR = DATA_DIR / "styles"

#: SHA-256 of each bundled file, by its path relative to the bundle root.
BUNDLED_SHA256: dict[str, str] = {
    "models/arbitrary.safetensors": "427b8f071ab56814be9f3855516a64656d8fe63d215a54380e53fc18f0411d51",
    "models/multistyle26.safetensors": "01651702859fb9568d2d16472c72d83fa2faba560eada5ed1bddb5bbed036215",
    "models/composition_vii.safetensors": "431c91e37528c515976a9b829fdc8977b9c799a6317a5d207096acd8f716bb0f",
    "models/starry_night.safetensors": "ef4611d3129f3d4254611c1677f8ac44f429c9d519485bcc33811318d8f994e4",
    "models/the_scream.safetensors": "ed8f7f7b9ca3e930de8ff0831e52ac6e2df96dff7ed0d92d42f88d245a5ae2eb",
    "models/wave.safetensors": "7ef84129434f3fdcd5c43b25ee793cbe4103a7cb9c4f82ceb07398ed1dd93588",
    "weights/style_predictor.safetensors": "646c81d6845d3e98b043d0229554ece97e61805b3677ebb14693f79e62387a84",
    # the VGG16 loss network, as printed by scripts/import/extract_vgg16.py
    "weights/vgg16_conv1_1-conv4_3.fp16.safetensors": "59f618ba7f52201ff1c85a884d2e0f11e5ccc35824dd7285eb497a0ea35e7948",
}


@functools.lru_cache(maxsize=1)
def bundle_root() -> Path:
    """The folder that holds ``models/`` and ``weights/``: inside the installed package, else the source tree."""
    packaged = Path(str(resources.files("stylize"))) / "_bundled"
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent


def bundled_folder(name: str) -> Path:
    """The folder that holds bundled ``name`` ("models" or "weights")."""
    return bundle_root() / name


def bundled_path(relative: str, verify: bool = True) -> Path:
    """Path of a bundled file such as ``models/multistyle26.safetensors``, checked against its SHA-256."""
    path = bundle_root() / relative
    if not path.is_file():
        raise StylizeError(f"bundled file missing: {path}", "reinstall stylize", exit_code=EXIT_FAILURE)
    if verify:
        verify_file(path, relative)
    return path


def verify_file(path: Path, relative: str) -> None:
    """Refuse ``path`` unless its SHA-256 is the one recorded for the bundled file ``relative`` (if one is)."""
    expected = BUNDLED_SHA256.get(relative)
    if expected is None:
        return
    if sha256_of(path) != expected:
        raise StylizeError(
            f"bundled file {path} does not match its recorded SHA-256 (damaged or replaced)",
            "reinstall stylize",
            exit_code=EXIT_FAILURE,
        )


def sha256_of(path: Path) -> str:
    """The file's SHA-256 in hex (cached while its size and modification time stay the same)."""
    info = path.stat()
    return _sha256(path, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=32)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    # mtime and size are part of the cache key so a file changed during the process is hashed again.
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_models() -> list[Path]:
    folder = bundle_root() / "models"
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def user_models_dir() -> Path:
    """Per-user models folder: ``$STYLIZE_HOME/models``, else ``$XDG_DATA_HOME/stylize/models``."""
    home = os.environ.get("STYLIZE_HOME")
    if home:
        return Path(home) / "models"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "stylize" / "models"
