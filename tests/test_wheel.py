"""A wheel built from the repository carries the bundled models and works outside the repository."""

import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

from stylize.io.resources import BUNDLED_SHA256
from tests.conftest import REPO, make_photo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling", reason="the test extra installs hatchling to build the wheel offline")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("stylize-*.whl")
    return path


def test_wheel_contains_the_bundled_files(wheel):
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert "stylize/_bundled/models/multistyle26.safetensors" in names
    assert "stylize/cli/__init__.py" in names
    assert "stylize/serve/static/index.html" in names  # the studio page of `stylize serve`
    for relative, digest in BUNDLED_SHA256.items():  # the models and the VGG16 weights, as recorded
        assert hashlib.sha256(archive.read(f"stylize/_bundled/{relative}")).hexdigest() == digest, relative


def test_installed_wheel_finds_models_through_package_resources(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    make_photo(elsewhere / "photo.png", (40, 32))
    # PYTHONPATH puts the installed copy ahead of the editable checkout; cwd is outside the repository.
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import stylize, stylize.io.resources as r; print(stylize.__file__); print(r.bundle_root())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )
    module_file, root = probe.stdout.split()
    assert module_file.startswith(str(site)) and root == str(site / "stylize" / "_bundled")
    result = subprocess.run(
        [sys.executable, "-m", "stylize", "apply", "photo.png", "out.png", "--json"],
        cwd=elsewhere, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "out.png").stat().st_size > 0
    assert '"model": "multistyle26"' in result.stdout
