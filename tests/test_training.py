"""Training end to end on tiny images: learning, exact resume, N styles, --from, bad input, DDP, CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from stylize.cli.train import register
from stylize.config import ARCHITECTURES, WARMUP_STEPS, LossConfig, TrainConfig
from stylize.devices import autocast_dtype, cpu_has_fast_bf16
from stylize.errors import StylizeError
from stylize.network.generator import Generator
from stylize.network.modelfile import load_model
from stylize.training.checkpoint import load_checkpoint
from stylize.training.data import ContentStream, find_photos
from stylize.training.loop import train
from stylize.training.losses import PerceptualLoss
from stylize.training.schedule import learning_rate_factor, plan_steps
from stylize.training.setup import Recipe, check_config, recipe, resolved
from tests.conftest import invoke


@pytest.fixture(autouse=True)
def one_thread():
    # 32-pixel images are too small to split over threads; on a shared CPU extra threads only wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A smooth colour gradient plus noise: photo-like enough for a loss network, unique per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    phase = rng.uniform(0, 6, size=3)
    channels = [np.sin(3 * x + 2 * y + p) * 0.4 + 0.5 for p in phase]
    pixels = np.stack(channels, -1) + rng.normal(0, 0.05, (height, width, 3))
    Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8)).save(path)
    return path


def write_stripes(path: Path, vertical: bool, colour: tuple[int, int, int]) -> Path:
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)  # large enough for the style predictor too
    stripes = (np.arange(64) // 4) % 2 == 0
    if vertical:
        pixels[:, stripes] = colour
    else:
        pixels[stripes, :] = colour
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    content = root / "content" / "nested"
    content.mkdir(parents=True)
    for i in range(6):
        write_image(content / f"photo{i}.png", i)
    return {
        "content": root / "content",
        "style_a": write_stripes(root / "red_stripes.png", True, (230, 40, 20)),
        "style_b": write_stripes(root / "blue_bands.png", False, (20, 60, 230)),
    }


def tiny_config(data: dict[str, Path], out: Path, **changes) -> TrainConfig:
    config = TrainConfig(
        style=(str(data["style_a"]),),
        content_dir=str(data["content"]),
        out=str(out),
        iterations=6,
        batch_size=2,
        image_size=32,
        init="random",
        arch="small",
        device="cpu",
        precision="fp32",  # bit-exact comparisons need one code path
        workers=0,
        checkpoint_every=1000,
        log_every=1,
        loss=LossConfig(style_size=32),
    )
    return dataclasses.replace(config, **changes)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_loss_decreases_over_30_steps(data: dict[str, Path], tmp_path: Path) -> None:
    totals: list[float] = []
    config = tiny_config(data, tmp_path / "m.safetensors", iterations=30, lr=1e-2, log=str(tmp_path / "log.jsonl"))
    out = train(config, on_step=lambda p: totals.append(p.total))
    assert len(totals) == 30 and out.is_file()
    assert np.mean(totals[-5:]) < 0.7 * np.mean(totals[:5])
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 31))
    assert {"content", "style", "tv", "total", "images_per_s"} <= set(lines[0])
    model = load_model(out)
    assert model.styles == ["red_stripes"]
    assert model.training["steps"] == 30 and model.training["lr"] == 1e-2


def test_interrupted_and_resumed_run_matches_uninterrupted(data: dict[str, Path], tmp_path: Path) -> None:
    reference = train(tiny_config(data, tmp_path / "a.safetensors", iterations=8))

    def interrupt(progress) -> None:
        if progress.step == 3:
            raise KeyboardInterrupt

    interrupted = tiny_config(data, tmp_path / "b.safetensors", iterations=8)
    with pytest.raises(StylizeError, match="interrupted at step 3") as caught:
        train(interrupted, on_step=interrupt)
    assert caught.value.exit_code == 130
    checkpoint = load_checkpoint(tmp_path / "b.ckpt")
    assert checkpoint["step"] == 3 and checkpoint["data_position"] == 6
    assert {"torch", "numpy", "python"} <= set(checkpoint["rng"]) and checkpoint["optimizer"]["state"]

    resumed = train(dataclasses.replace(interrupted, resume="auto"))
    expected, actual = weights(reference), weights(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_two_styles_give_two_different_outputs(data: dict[str, Path], tmp_path: Path) -> None:
    config = tiny_config(data, tmp_path / "two.safetensors", style=(str(data["style_a"]), str(data["style_b"])), lr=1e-2)
    model = load_model(train(dataclasses.replace(config, iterations=12)))
    assert model.styles == ["red_stripes", "blue_bands"] and model.config.num_styles == 2
    photo = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        first = model.generator(photo, torch.tensor([1.0, 0.0]))
        second = model.generator(photo, torch.tensor([0.0, 1.0]))
    assert (first - second).abs().mean().item() > 1e-3


def test_from_model_trains_only_the_new_rows(data: dict[str, Path], tmp_path: Path) -> None:
    base = train(tiny_config(data, tmp_path / "base.safetensors", iterations=2))
    extended = train(
        tiny_config(data, tmp_path / "more.safetensors", style=(str(data["style_b"]),), from_model=str(base), iterations=3)
    )
    model = load_model(extended)
    assert model.styles == ["red_stripes", "blue_bands"]
    old, new = weights(base), weights(extended)
    changed_new_rows = 0
    for key, tensor in old.items():
        if key.endswith((".gamma", ".beta")):
            torch.testing.assert_close(new[key][:1], tensor, rtol=0, atol=0)
            changed_new_rows += int(not torch.equal(new[key][1:], tensor.mean(0, keepdim=True)))
        else:
            torch.testing.assert_close(new[key], tensor, rtol=0, atol=0)
    assert changed_new_rows > 0


def test_unreadable_content_images_are_skipped(data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "content"
    folder.mkdir()
    write_image(folder / "good.png", 7)
    (folder / "garbage.jpg").write_bytes(b"this is not an image")
    truncated = write_image(folder / "truncated.png", 8).read_bytes()
    (folder / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    photos, skipped = find_photos(folder)
    assert skipped == 1 and [p.name for p in photos] == ["good.png", "truncated.png"]
    with caplog.at_level(logging.WARNING, logger="stylize"):
        train(tiny_config(data, tmp_path / "m.safetensors", content_dir=str(folder), iterations=2))
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "skipped 1 unreadable" in messages and "truncated.png" in messages


def test_clear_errors_for_bad_input(data: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    with pytest.raises(StylizeError, match="no readable photos"):
        train(tiny_config(data, tmp_path / "m.safetensors", content_dir=str(empty)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(StylizeError, match="cannot read style image"):
        train(tiny_config(data, tmp_path / "m.safetensors", style=(str(broken),)))
    with pytest.raises(StylizeError, match="style image not found") as caught:
        train(tiny_config(data, tmp_path / "m.safetensors", style=("no_such_painting",)))
    assert "starry_night" in caught.value.hint  # the hint lists the bundled paintings
    with pytest.raises(StylizeError, match="unknown architecture"):
        train(tiny_config(data, tmp_path / "m.safetensors", arch="huge"))
    assert not (tmp_path / "m.safetensors").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps_done = []
    original = PerceptualLoss.forward

    def poisoned(self, generated, content, style_index):
        terms = original(self, generated, content, style_index)
        if len(steps_done) == 2:  # the third step's loss
            terms.style = terms.style * float("nan")
        return terms

    monkeypatch.setattr(PerceptualLoss, "forward", poisoned)
    with pytest.raises(StylizeError, match="loss became nan at step 3.*step 2") as caught:
        train(tiny_config(data, tmp_path / "m.safetensors", checkpoint_every=2), on_step=steps_done.append)
    assert caught.value.exit_code == 1
    assert load_checkpoint(tmp_path / "m.ckpt")["step"] == 2
    assert not (tmp_path / "m.safetensors").exists()


def test_preview_grid_and_bf16_autocast(data: dict[str, Path], tmp_path: Path) -> None:
    config = tiny_config(
        data, tmp_path / "m.safetensors", style=(str(data["style_a"]), str(data["style_b"])), precision="bf16", preview_every=2
    )
    train(dataclasses.replace(config, iterations=2))
    preview = Image.open(tmp_path / "m.preview-000002.png")
    assert preview.size == (3 * 32, 3 * 32)  # photo + 2 styles across, 3 photos down (too few to hold any out)
    assert load_model(tmp_path / "m.safetensors").training["precision_used"] == "bfloat16"


def test_precision_auto_follows_the_hardware() -> None:
    expected = torch.bfloat16 if cpu_has_fast_bf16() else None
    assert autocast_dtype("auto", torch.device("cpu")) == expected
    assert autocast_dtype("fp32", torch.device("cpu")) is None


def test_process_slices_make_up_the_single_process_batch(data: dict[str, Path]) -> None:
    photos, _ = find_photos(data["content"])
    single = ContentStream(photos, 32, 4, 2, seed=5)
    halves = [ContentStream(photos, 32, 4, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    for step in (0, 1, 7):  # step 7 is in the fifth epoch of 6 photos
        images, styles = single[step]
        torch.testing.assert_close(torch.cat([halves[0][step][0], halves[1][step][0]]), images)
        assert torch.cat([halves[0][step][1], halves[1][step][1]]).tolist() == styles.tolist() == [0, 1, 0, 1]
    assert not torch.equal(single[0][0], single[1][0])


def _ddp_worker(rank: int, port: int, config: TrainConfig) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(config)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(data: dict[str, Path], tmp_path: Path) -> None:
    config = tiny_config(data, tmp_path / "single.safetensors", iterations=3, batch_size=4)
    single = train(config)
    distributed = dataclasses.replace(config, out=str(tmp_path / "ddp.safetensors"))
    context = multiprocessing.get_context("spawn")
    port = free_port()
    processes = [context.Process(target=_ddp_worker, args=(rank, port, distributed)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    for process in processes:
        if process.is_alive():
            process.kill()
    assert [p.exitcode for p in processes] == [0, 0]
    expected, actual = weights(single), weights(tmp_path / "ddp.safetensors")
    torch.manual_seed(config.seed)  # the initial weights, built as train() builds them
    initial = Generator(ARCHITECTURES["small"]).state_dict()
    # Adam's first steps are nearly sign(gradient) * lr, so a gradient element that is zero up to rounding can move
    # either way depending on the summation order (one batch of 4 versus two averaged batches of 2). The runs must
    # agree to a small fraction of how far training moved the weights. The same single-process run with 1 versus 2
    # threads differs just as much (mean 4e-6, 7% of elements above 1e-5); wrong sharding or unaveraged gradients
    # give differences as large as the changes themselves (about 2e-3) in nearly every element.
    differences = torch.cat([(actual[k] - expected[k]).abs().flatten() for k in expected])
    changes = torch.cat([(expected[k] - initial[k]).abs().flatten() for k in expected])
    print(f"DDP vs single: mean |diff| {differences.mean():.2e}, max {differences.max():.2e}; mean |change| {changes.mean():.2e}")
    assert (differences > 1e-5).float().mean() < 0.2
    assert differences.mean() < 0.02 * changes.mean()


def test_cli_train_command(data: dict[str, Path], tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)  # keep `train` a sub-command, as in the real app
    out = tmp_path / "cli.safetensors"
    common = ["--content-dir", str(data["content"]), "--out", str(out), "--image-size", "32", "--batch-size", "2"]
    common += ["--arch", "small", "--workers", "0", "--style-size", "32", "--precision", "fp32"]
    result = CliRunner().invoke(
        app, ["train", "--style", str(data["style_a"]), "--style", str(data["style_b"]), "--iterations", "2", "--tv-weight", "7", *common]
    )
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert model.styles == ["red_stripes", "blue_bands"] and model.training["loss"]["tv_weight"] == 7.0
    result = CliRunner().invoke(app, ["train", "--style", "no_such_painting", *common])
    assert isinstance(result.exception, StylizeError) and "not found" in result.exception.message


def test_cli_train_flags_are_the_config_fields() -> None:
    """Every TrainConfig and LossConfig field is a flag with its default and the comment above it as help."""
    import dataclasses

    from stylize.config import LossConfig

    result = invoke("train", "--help")
    text = result.stdout.decode()
    assert result.returncode == 0
    usage = next(line for line in text.splitlines() if line.startswith("Usage:"))
    assert usage.split() == ["Usage:", "stylize", "train", "[OPTIONS]"], usage  # no hidden positional
    assert "<list" not in text and "[]" not in text and "-s, --style IMAGE" in text
    for cls in (TrainConfig, LossConfig):
        for item in dataclasses.fields(cls):
            if item.name not in ("loss", "from_model"):
                assert "--" + item.name.replace("_", "-") in text, item.name
    words = " ".join(text.split())
    assert "--from" in text and "Adam learning rate. None: the start's recipe" in words and "[default: 256]" in words


def test_compiled_training_step_matches_eager(data: dict[str, Path], tmp_path: Path) -> None:
    totals: dict[str, list[float]] = {"never": [], "always": []}
    for mode, seen in totals.items():
        out = train(tiny_config(data, tmp_path / f"{mode}.safetensors", iterations=3, compile=mode), on_step=lambda p, s=seen: s.append(p.total))
    # The first step's loss is the same function of the same weights; after that Adam, which divides by the gradient's
    # own size, turns rounding differences in near-zero gradients into lr-sized steps, so only closeness is asked.
    assert totals["always"][0] == pytest.approx(totals["never"][0], rel=1e-6)
    assert totals["always"] == pytest.approx(totals["never"], rel=1e-2)
    assert weights(out).keys() == weights(tmp_path / "never.safetensors").keys()  # no "_orig_mod." prefix saved


def test_compile_auto_only_for_long_single_process_cuda_runs() -> None:
    from stylize.distributed import Launch
    from stylize.training.setup import COMPILE_MIN_STEPS, should_compile

    single, two = Launch(0, 1, 0), Launch(0, 2, 0)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not should_compile("auto", COMPILE_MIN_STEPS - 1, single, cuda)
    assert should_compile("auto", COMPILE_MIN_STEPS, single, cuda)
    assert not should_compile("auto", 10 * COMPILE_MIN_STEPS, two, cuda)
    assert not should_compile("auto", 10 * COMPILE_MIN_STEPS, single, cpu)  # eager measured faster on the CPU
    assert should_compile("always", 1, two, cpu) and not should_compile("never", 10**6, single, cuda)
    with pytest.raises(StylizeError, match="compile"):
        train(TrainConfig(style=("x.png",), compile="sometimes"))


def test_trained_model_records_its_inference_precision(data: dict[str, Path], tmp_path: Path) -> None:
    from stylize.training.loop import inference_precision

    model = load_model(train(tiny_config(data, tmp_path / "m.safetensors", iterations=2)))
    assert set(model.precision) <= {"cpu"} and model.precision.get("cpu", "fp32") in ("fp32", "bf16")
    if cpu_has_fast_bf16():
        assert model.precision == {"cpu": model.precision["cpu"]}  # measured, so recorded
    slivers = [write_image(tmp_path / f"s{i}.png", i, size=(600, 6)) for i in range(2)]  # thumbnail: 512x5
    assert inference_precision(model.generator, slivers, torch.device("cpu")) in ({}, {"cpu": "fp32"})


def test_stale_temporaries_of_this_model_are_removed_and_no_others(data: dict[str, Path], tmp_path: Path) -> None:
    from stylize.io.files import TEMP_SUFFIX

    out = tmp_path / "starry.safetensors"
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = [tmp_path / f".starry.safetensors.0123abcd{TEMP_SUFFIX}", tmp_path / f".starry.ckpt.{dead}-0123abcd{TEMP_SUFFIX}"]
    keep = [
        tmp_path / f".starry.safetensors.v2.0123abcd{TEMP_SUFFIX}",  # belongs to starry.safetensors.v2
        tmp_path / f".other.safetensors.0123abcd{TEMP_SUFFIX}",
        tmp_path / f".starry.safetensors.{os.getppid()}-0123abcd{TEMP_SUFFIX}",  # a running writer's
    ]
    for path in stale + keep:
        path.write_bytes(b"x")
    train(tiny_config(data, out, iterations=1))
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in keep)


def test_predicted_init_starts_from_the_paintings_predicted_style(data: dict[str, Path], tmp_path: Path) -> None:
    """init "predicted": the arbitrary-style network with the painting's predicted norm rows, before any real step."""
    from stylize.api import Stylizer

    out = train(tiny_config(data, tmp_path / "p.safetensors", init="predicted", iterations=1, lr=1e-12))
    photo = torch.rand(1, 3, 40, 48)
    trained = Stylizer.load(out, device="cpu", precision="fp32").apply(photo)
    predicted = Stylizer.load("arbitrary", device="cpu", precision="fp32").apply(photo, style_image=str(data["style_a"]))
    assert (trained - predicted).abs().max().item() < 1e-4


def test_predicted_init_trains_every_layer_by_default_and_only_the_norm_rows_when_asked(data: dict[str, Path], tmp_path: Path) -> None:
    from stylize.io.catalog import find_model

    before = weights(find_model("arbitrary"))
    default = train(tiny_config(data, tmp_path / "a.safetensors", init="predicted", iterations=2))
    assert not torch.equal(weights(default)["head.conv.weight"], before["head.conv.weight"])
    assert load_model(default).training["start"] == "predicted" and load_model(default).training["trainable"] == "all"
    recorded = load_model(default).training
    assert (recorded["lr"], recorded["norm_rate"], recorded["batch_size"]) == (5e-4, 4.0, 2)  # tiny_config's batch: 2
    norms = train(tiny_config(data, tmp_path / "r.safetensors", init="predicted", trainable="norms", iterations=1))
    assert (load_model(norms).training["lr"], load_model(norms).training["norm_rate"]) == (1e-3, 1.0)
    out = train(tiny_config(data, tmp_path / "n.safetensors", init="predicted", trainable="norms", iterations=2, lr=1e-2))
    assert load_model(out).training["lr"] == 1e-2
    after = weights(out)
    tables = [key for key in after if key.endswith((".gamma", ".beta"))]
    assert tables and all(not torch.equal(after[key], before[key][:1]) for key in tables[:3])
    assert all(torch.equal(after[key], before[key]) for key in after if key not in tables)


def test_train_is_importable_from_the_package_and_draws_a_tqdm_bar(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    import stylize

    out = stylize.train(tiny_config(data, tmp_path / "bar.safetensors", iterations=2), progress=True)
    assert out.is_file() and "2/2" in capsys.readouterr().err


class _Stop(Exception):
    pass


def test_bare_recipe_plans_ten_minutes_per_painting_and_says_so(data: dict[str, Path], tmp_path: Path, caplog) -> None:
    """No init, trainable, time or iterations given: the predicted-style recipe, every layer, a budget of 10 minutes for
    each painting, its steps not known until the first ones are timed."""
    totals: list[int | None] = []

    def stop(progress) -> None:
        totals.append(progress.total_steps)
        raise _Stop

    paintings = (str(data["style_a"]), str(data["style_b"]))
    bare = dataclasses.replace(TrainConfig(style=paintings), content_dir=str(data["content"]), out=str(tmp_path / "m.safetensors"),
                               batch_size=2, image_size=32, device="cpu", workers=0, loss=LossConfig(style_size=32))  # fmt: skip
    assert recipe(bare) == Recipe("predicted", "all", None, 5e-4, 1200.0, "cosine", 2, 4.0, 1e7)
    caplog.set_level("INFO", logger="stylize")
    with pytest.raises(_Stop):
        train(bare, on_step=stop)
    assert totals == [None]
    plan = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("plan:"))
    assert "20 min budget" in plan and "starting from the predicted style, training every layer" in plan
    assert "timing the first steps" in plan


def test_recipes_keep_fixed_counts_where_asked() -> None:
    """init random keeps Johnson et al.'s 40,000 steps unless given a time; iterations and epochs replace a budget."""
    random = TrainConfig(style=("a.jpg",), init="random")
    assert recipe(random) == Recipe("random", "all", 40_000, 1e-3, None, "constant", 4, 1.0, 0.0)
    assert recipe(dataclasses.replace(random, time="1.5h")) == Recipe("random", "all", None, 1e-3, 5400.0, "constant", 4, 1.0, 0.0)
    predicted = TrainConfig(style=("a.jpg",))
    assert recipe(dataclasses.replace(predicted, iterations=300))[2:] == (300, 5e-4, None, "cosine", 2, 4.0, 1e7)
    unbordered = dataclasses.replace(predicted, loss=LossConfig(border_weight=0.0))
    assert recipe(unbordered).border_weight == 0.0 and resolved(unbordered).loss.border_weight == 0.0  # 0 turns it off
    assert resolved(predicted).loss.border_weight == 1e7 and resolved(predicted).batch_size == 2  # what files record
    norms_only = recipe(dataclasses.replace(predicted, trainable="norms"))
    assert (norms_only.lr, norms_only.norm_rate) == (1e-3, 1.0)  # the rate the norm rows were measured at
    assert recipe(dataclasses.replace(predicted, epochs=2.0)).seconds is None
    constant = recipe(dataclasses.replace(predicted, time="90s", schedule="constant"))
    assert constant == Recipe("predicted", "all", None, 5e-4, 90.0, "constant", 2, 4.0, 1e7)
    assert recipe(TrainConfig(style=("a.jpg",), from_model="multistyle26")).seconds == 600.0
    for bad in ("ten", "-5m", "0s", "inf"):
        with pytest.raises(StylizeError, match="time must be"):
            check_config(dataclasses.replace(predicted, time=bad))
    with pytest.raises(StylizeError, match="not both"):
        check_config(dataclasses.replace(predicted, time="5m", iterations=10))
    with pytest.raises(StylizeError, match="unknown schedule"):
        check_config(dataclasses.replace(predicted, schedule="linear"))


def test_the_learning_rate_warms_up_then_decays_to_zero_at_the_last_step() -> None:
    assert learning_rate_factor(0, None, "cosine") == pytest.approx(1 / WARMUP_STEPS)
    assert learning_rate_factor(WARMUP_STEPS - 1, None, "cosine") == 1.0  # the warm-up needs no count: a budget is planned in it
    total = WARMUP_STEPS + 100
    assert learning_rate_factor(WARMUP_STEPS, total, "cosine") == 1.0
    assert learning_rate_factor(WARMUP_STEPS + 50, total, "cosine") == pytest.approx(0.5)
    assert learning_rate_factor(total - 1, total, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert learning_rate_factor(5000, None, "constant") == 1.0
    with pytest.raises(ValueError):
        learning_rate_factor(WARMUP_STEPS, None, "cosine")


def test_planned_steps_fill_what_is_left_of_the_budget() -> None:
    # a 600 s budget, 10 s spent on set-up and 13 timed steps, 0.5 s a step, 8 steps' worth kept for saving
    assert plan_steps(13, 10.0, 0.5, 600.0) == 13 + (600 - 10 - 4) / 0.5
    assert plan_steps(13, 700.0, 0.5, 600.0) == 13  # the budget is spent: the run ends after its timed steps


def test_a_time_budget_is_planned_recorded_and_reproduced_by_its_count(data: dict[str, Path], tmp_path: Path, caplog) -> None:
    """The run times its first steps, fixes its count within the budget and records it; a rerun with that count as
    iterations makes the same model."""
    caplog.set_level("INFO", logger="stylize")
    totals: list[int | None] = []
    budgeted = tiny_config(data, tmp_path / "t.safetensors", iterations=None, time="3s", schedule="cosine")
    model = load_model(train(budgeted, on_step=lambda progress: totals.append(progress.total_steps)))
    planned, seconds = model.training["iterations"], model.training["step_seconds"]
    assert model.training["steps"] == planned and model.training["time_budget_s"] == 3.0
    assert planned >= 13 and planned * seconds <= 3.0
    assert totals[0] is None and totals[-1] == planned and len(totals) == planned
    plans = [record.getMessage() for record in caplog.records if record.getMessage().startswith("plan:")]
    assert "3 s budget" in plans[0] and "timing the first steps" in plans[0]
    assert f"3 s budget: {planned} steps" in plans[1] and f"({seconds:.2f} s a step)" in plans[1]

    rerun = train(tiny_config(data, tmp_path / "i.safetensors", iterations=planned, schedule="cosine"))
    assert load_model(rerun).training["time_budget_s"] is None
    expected, actual = weights(tmp_path / "t.safetensors"), weights(rerun)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def test_an_interrupted_budget_resumes_to_the_count_it_planned(data: dict[str, Path], tmp_path: Path) -> None:
    """Resumed, a budget's run ends at the step count the first run planned, with the weight average it kept: the
    same model as an uninterrupted run of that count."""

    def interrupt(progress) -> None:
        if progress.step == 16:
            raise KeyboardInterrupt

    budgeted = tiny_config(data, tmp_path / "b.safetensors", iterations=None, time="3s", schedule="cosine", ema=0.9)
    with pytest.raises(StylizeError, match="interrupted at step 16"):
        train(budgeted, on_step=interrupt)
    planned = json.loads(load_checkpoint(tmp_path / "b.ckpt")["train_config"])["iterations"]
    assert planned >= 16
    resumed = train(dataclasses.replace(budgeted, resume="auto"))
    assert load_model(resumed).training["steps"] == planned
    reference = train(tiny_config(data, tmp_path / "r.safetensors", iterations=planned, schedule="cosine", ema=0.9))
    expected, actual = weights(reference), weights(resumed)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)
    last = train(tiny_config(data, tmp_path / "l.safetensors", iterations=planned, schedule="cosine"))
    assert any(not torch.equal(weights(last)[key], expected[key]) for key in expected)  # the file holds the average


def test_the_border_term_is_minimised_and_logged(data: dict[str, Path], tmp_path: Path) -> None:
    """With a border weight, each crop's output is compared with the network's output on a wider view: the term is part
    of what is minimised and of the log."""
    bordered = tiny_config(data, tmp_path / "m.safetensors", iterations=4, log=str(tmp_path / "log.jsonl"),
                           loss=LossConfig(style_size=32, border_weight=1e6))  # fmt: skip
    train(bordered)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(line["border"] > 0 for line in lines)
    assert all(line["total"] == pytest.approx(line["content"] + line["style"] + line["tv"] + line["border"]) for line in lines)
    train(tiny_config(data, tmp_path / "p.safetensors", iterations=4, log=str(tmp_path / "plain.jsonl")))
    assert all(json.loads(line)["border"] == 0 for line in (tmp_path / "plain.jsonl").read_text().splitlines())
