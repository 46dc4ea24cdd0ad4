from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stylize.config import GeneratorConfig
from stylize.network.generator import Generator

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def invoke(*args: str, cwd: Path | None = None, input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI's ``main`` in this process (Typer's CliRunner isolation); returns what a subprocess run would."""
    from typer.testing import CliRunner

    from stylize.cli import main

    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    os.environ.pop("STYLIZE_DEBUG", None)
    os.environ.update(env or {})
    runner = CliRunner()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with runner.isolation(input=input) as (stdout, stderr, *_):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            out, err = stdout.getvalue(), stderr.getvalue()
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["stylize", *args], code, out, err)


def run_cli(*args: str, cwd: Path | None = None, input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would (for what only a process shows: exit, signals, stdio)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("STYLIZE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "stylize", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        env=full_env,
        timeout=300,
    )


def make_photo(path: Path, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Path:
    """A smooth synthetic photo (gradients and a disc) written with PIL."""
    import numpy as np
    from PIL import Image

    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(size) / 3) ** 2).astype(np.float32)
    rgb = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), 0.3 + 0.6 * disc], axis=-1)
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def randomized_generator(config: GeneratorConfig) -> Generator:
    """A generator in eval mode with non-trivial norm tables (fresh ones are all gamma=1, beta=0 and hide mixing bugs)."""
    generator = Generator(config).eval()
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("gamma"):
                param.uniform_(0.5, 1.5)
            elif name.endswith("beta"):
                param.uniform_(-0.3, 0.3)
    return generator


def noisy_picture(width: int = 48, height: int = 32, seed: int = 0, mode: str = "RGB"):
    """A deterministic noisy picture (PIL) in ``mode`` "L", "RGB" or "RGBA"."""
    import numpy as np
    from PIL import Image

    channels = len(mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    assert image.mode == mode
    return image


def saved(image, path: Path, **options) -> Path:
    """``image`` saved to ``path`` (Pillow options as keywords)."""
    image.save(path, **options)
    return path
