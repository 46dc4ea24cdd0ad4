"""Finding style models by name: a path, ``./models``, the bundled models, then the per-user folder."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from stylize.errors import StylizeError
from stylize.io.resources import bundle_root, bundled_models, user_models_dir, verify_file

#: The model used when no --model is given.
DEFAULT_MODEL = "multistyle26"
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".model")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    origin: str  # "local", "bundled" or "user"


def search_folders() -> list[tuple[str, Path]]:
    """The folders searched for model names, in order."""
    return [("local", Path.cwd() / "models"), ("bundled", bundle_root() / "models"), ("user", user_models_dir())]


def list_models() -> list[ModelEntry]:
    """Every model file in the search folders; a name found twice is listed where it resolves first."""
    seen: set[str] = set()
    entries = []
    for origin, folder in search_folders():
        paths = bundled_models() if origin == "bundled" else sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        for path in paths:
            if path.stem not in seen:
                seen.add(path.stem)
                entries.append(ModelEntry(path.stem, path, origin))
    return entries


def find_model(name: str | None) -> Path:
    """Resolve ``--model``: an existing path, ``./models/NAME.safetensors``, a bundled model, the per-user folder."""
    name = name or DEFAULT_MODEL
    candidate = Path(name).expanduser()
    if candidate.exists():
        return candidate
    looks_like_path = any(sep in name for sep in ("/", "\\")) or candidate.suffix.lower() in MODEL_SUFFIXES
    if not looks_like_path:
        for origin, folder in search_folders():
            path = folder / f"{name}.safetensors"
            if path.is_file():
                if origin == "bundled":
                    verify_file(path, f"models/{path.name}")
                return path
    known = [entry.name for entry in list_models()]
    close = difflib.get_close_matches(candidate.stem, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known models: {', '.join(known) or 'none'}; see 'stylize models'"
    what = "model file not found" if looks_like_path else "unknown model"
    raise StylizeError(f"{what}: {name}", hint)
