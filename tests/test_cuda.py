"""The CUDA paths: parity with the CPU, reduced precision, CUDA graphs, streaming after out-of-memory, folders, training.

Every test here needs a CUDA device and is skipped without one (CI has none); they run on a lent GPU machine with
``python -m pytest tests/test_cuda.py`` (see docs/gpu.md for the last run).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylize.api import Stylizer
from stylize.config import ARCHITECTURES, LossConfig, TrainConfig
from stylize.engine import routing as engine_module
from stylize.engine.precision import MAX_MEAN_ABS, MAX_P999, deviation
from stylize.engine.routing import Engine
from stylize.engine.tiling import estimate_whole_bytes
from stylize.io.catalog import DEFAULT_MODEL, find_model
from stylize.network.generator import Generator
from stylize.network.modelfile import load_model
from stylize.training.loop import train
from tests.conftest import invoke, make_photo, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def photo_tensor(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A smooth photo-like (1, 3, H, W) image: gradients, a disc and a little noise."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    disc = (((x - 0.5) ** 2 + (y - 0.5) ** 2) < 0.1).float()
    image = torch.stack([x, y, 0.3 + 0.6 * disc]) + 0.03 * torch.randn(3, height, width, generator=generator)
    return image.clamp(0, 1).unsqueeze(0)


def bundled_generator() -> Generator:
    return load_model(find_model(DEFAULT_MODEL)).generator


def test_cuda_fp32_matches_the_cpu() -> None:
    image, weights = photo_tensor(123, 77), torch.eye(26)[19]
    cpu = Engine(bundled_generator(), torch.device("cpu"), "fp32", compile="never").forward(image, weights)
    cuda = Engine(bundled_generator(), torch.device("cuda"), "fp32", compile="never").forward(image, weights)
    assert cuda.shape == cpu.shape == (1, 3, 77, 123)
    # cuDNN may pick TF32-free but differently ordered algorithms: float rounding only.
    assert (cuda - cpu).abs().max().item() < 2e-3


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_fast_path_matches_autocast_reference(precision: str) -> None:
    """The prepared network in fp16/bf16 against the plain generator under autocast, same precision."""
    torch.manual_seed(0)
    generator = Generator(ARCHITECTURES["johnson"])
    image, weights = photo_tensor(256, 192), torch.ones(1)
    fast = Engine(generator, torch.device("cuda"), precision, compile="never")
    plain = Engine(generator, torch.device("cuda"), precision, compile="never", optimize=False)
    reference = Engine(generator, torch.device("cuda"), "fp32", compile="never").forward(image, weights)
    ours, theirs = fast.forward(image, weights), plain.forward(image, weights)
    # Both are rounding-level away from fp32; ours must be no worse than autocast's.
    assert deviation(reference, ours).mean_abs <= max(2 * deviation(reference, theirs).mean_abs, 1e-3)
    assert deviation(theirs, ours).p999 <= MAX_P999


def test_precision_auto_on_cuda_stays_within_tolerance() -> None:
    stylizer = Stylizer.load(device="cuda", precision="auto")
    reference = Stylizer.load(device="cuda", precision="fp32")
    image = photo_tensor(200, 150, seed=3)
    error = deviation(reference.apply(image), stylizer.apply(image))
    assert error.mean_abs <= MAX_MEAN_ABS and error.p999 <= MAX_P999, (stylizer.precision, error)


def test_cuda_graphs_give_the_eager_result_for_each_new_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile on CUDA replays a CUDA graph whose output buffer is reused: each call must still return its own image."""
    real_compile, compiled, eager_fallbacks = engine_module.compile_function, [], []

    def watched_compile(function, cuda_graphs=False):
        def watched(*args):
            if not torch.compiler.is_compiling():  # the compiled network broke and runs eagerly instead
                eager_fallbacks.append(1)
            return function(*args)

        result = real_compile(watched, cuda_graphs=cuda_graphs)
        compiled.append((cuda_graphs, result is not None))
        return result

    monkeypatch.setattr(engine_module, "compile_function", watched_compile)
    torch.manual_seed(0)
    generator = Generator(ARCHITECTURES["small"])
    eager = Engine(generator, torch.device("cuda"), "fp16", compile="never")
    graphed = Engine(generator, torch.device("cuda"), "fp16", compile="always")
    images = [photo_tensor(96, 64, seed=s) for s in range(3)]
    weights = torch.ones(1)
    results = [graphed.forward(image, weights) for image in images]  # kept side by side: none may alias another
    for image, result in zip(images, results, strict=True):
        assert (result - eager.forward(image, weights)).abs().max().item() < 2e-2
    assert (results[0] - results[1]).abs().max().item() > 1e-2
    assert compiled == [(True, True)] and eager_fallbacks == []  # compiled once, with CUDA graphs, and never fell back


def test_out_of_memory_in_the_whole_pass_falls_back_to_streaming() -> None:
    """With the GPU capped below what a whole 2048x2048 pass needs, tile=auto must stream, not fail."""
    torch.manual_seed(0)
    generator = Generator(ARCHITECTURES["small"])
    engine = Engine(generator, torch.device("cuda"), "fp32", compile="never")
    image, weights = photo_tensor(2048, 2048), torch.ones(1)
    whole = engine.forward(image, weights, tile="off")
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # mem_get_info still reports the whole card free, so auto plans a whole pass, which then hits the cap.
    torch.cuda.set_per_process_memory_fraction(256 * 2**20 / total)
    try:
        streamed = engine.forward(image, weights, tile="auto")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().mean().item() < 0.5 / 255
    assert (streamed - whole).abs().max().item() < 8 / 255


def test_memory_limit_streams_large_images_on_cuda() -> None:
    stylizer = Stylizer.load(device="cuda", precision="fp16")
    image = photo_tensor(1536, 1024, seed=1)
    assert estimate_whole_bytes(stylizer.engine.generator, 1024, 1536, precision="fp16") > 100e6  # so it must stream
    whole = stylizer.apply(image, tile="off")
    streamed = stylizer.apply(image, memory_limit="100MB")
    assert (streamed - whole).abs().mean().item() < 1 / 255


def test_folder_on_cuda_matches_the_cpu(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for index, size in enumerate([(160, 120), (160, 120), (120, 160), (200, 100), (160, 120)]):
        png = make_photo(tmp_path / f"p{index}.png", size)
        photos.mkdir(exist_ok=True)
        Image.open(png).save(photos / f"p{index}.png")
        Image.open(png).save(photos / f"p{index}.jpg", quality=95)
    for device in ("cuda", "cpu"):
        # A subprocess, as users run it: decoding workers are not forked from a test process that holds CUDA.
        result = run_cli("apply", str(photos), str(tmp_path / device), "--device", device, "--precision", "fp32", "--json")
        assert result.returncode == 0, result.stderr.decode()
        summary = json.loads(result.stdout)
        assert summary["done"] == 10 and summary["failed"] == 0

    def read(name: str, file: str) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / name / file), dtype=np.float32)

    report = [
        f"p{index}.{ext}: cuda-cpu {np.abs(read('cuda', f'p{index}.{ext}') - read('cpu', f'p{index}.{ext}')).mean():.2f}"
        for index in range(5)
        for ext in ("png", "jpg")
    ]
    print("\n".join(report))
    for index in range(5):
        for ext in ("png", "jpg"):  # same decoder (Pillow), fp32 on both devices: rounding-level differences only
            assert np.abs(read("cuda", f"p{index}.{ext}") - read("cpu", f"p{index}.{ext}")).mean() < 1.0, report


def test_single_photo_cli_on_cuda(tmp_path: Path) -> None:
    make_photo(tmp_path / "photo.png", (150, 100))
    result = invoke("apply", "photo.png", "out.png", "--device", "cuda", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    info = json.loads(result.stdout)
    assert info["device"].startswith("cuda") and Image.open(tmp_path / "out.png").size == (150, 100)


def test_training_on_cuda_with_autocast_learns_and_saves(tmp_path: Path) -> None:
    content = tmp_path / "content"
    for index in range(4):
        make_photo(content / f"c{index}.png", (48, 40))
    style = make_photo(tmp_path / "style.png", (32, 32))
    config = TrainConfig(
        style=(str(style),), content_dir=str(content), out=str(tmp_path / "model.safetensors"), iterations=20,
        batch_size=2, image_size=32, arch="small", device="cuda", precision="auto", workers=0, log_every=1,
        log=str(tmp_path / "log.jsonl"), loss=LossConfig(style_size=32),
    )  # fmt: skip
    out = train(config)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [line["total"] for line in lines]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    model = load_model(out)
    assert model.styles == ["style"]
    resumed = dataclasses.replace(config, iterations=24, resume="auto")
    assert load_model(train(resumed)).styles == ["style"]
