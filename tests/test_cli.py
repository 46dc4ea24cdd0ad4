"""The CLI: the main apply paths and each error case, in-process (``invoke``); the real console entry in a few
subprocesses, for what only a process shows (its exit, bytes through a real pipe, what it imports)."""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from stylize import __version__
from stylize.config import GeneratorConfig
from stylize.errors import StylizeError
from stylize.network.generator import Generator
from stylize.network.modelfile import StyleModel, save_model
from tests.conftest import REPO, invoke, make_photo, run_cli


@pytest.fixture()
def photo(tmp_path):
    return make_photo(tmp_path / "photo.png", (52, 41))


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


# ----------------------------------------------------------------------------------------- the real console entry


def test_apply_with_the_bundled_default_model(tmp_path, photo):
    out = tmp_path / "out.jpg"
    result = run_cli("apply", str(photo), str(out))
    assert result.returncode == 0, result.stderr
    image = Image.open(out)
    assert image.format == "JPEG" and image.size == (52, 41)
    assert np.abs(pixels(out) - pixels(photo)).mean() > 10, "the output should look stylized, not like the photo"
    assert "multistyle26" in result.stdout.decode()


def test_stdin_to_stdout(photo):
    """Through real pipes: the process leaves without tearing the interpreter down, and every byte must still arrive."""
    result = run_cli("apply", "-", "-", "--format", "png", input=photo.read_bytes())
    assert result.returncode == 0, result.stderr
    assert result.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(result.stdout)).size == (52, 41)
    assert "multistyle26" in result.stderr.decode()  # the report goes to stderr, away from the image bytes


def test_version_without_importing_torch():
    """``stylize --version`` answers before any command module imports torch (start-up stays fast)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stylize", "--version"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"stylize {__version__}\n"
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "stylize.cli" in imported and "torch" not in imported


@pytest.mark.parametrize("code,status", [(3, 3), (None, 0), ("bye", 1)])
def test_exit_process_runs_exit_handlers_and_flushes(tmp_path, code, status):
    """The entry points leave through exit_process (no interpreter teardown): exit handlers still run, output is kept."""
    marker = tmp_path / "atexit-ran"
    program = (
        "import atexit, sys\n"
        "from stylize.cli import exit_process\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "sys.stdout.write('kept in the buffer')\n"
        f"exit_process({code!r})\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == status
    assert done.stdout == "kept in the buffer"
    assert marker.read_text() == "yes"
    assert done.stderr == ("bye\n" if code == "bye" else "")


# ---------------------------------------------------------------------------------------------------- apply, in-process


def test_json_report(tmp_path, photo):
    out = tmp_path / "out.png"
    result = invoke("apply", str(photo), str(out), "--style", "7", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["output"] == str(out) and report["size"] == [52, 41]
    assert report["model"] == "multistyle26" and report["style"] == "7"
    assert report["device"] == "cpu" and report["precision"] in ("fp32", "bf16")
    assert report["seconds"] > 0


def test_mix_is_between_its_styles_and_differs_from_each(tmp_path, photo):
    outs = {}
    for name, args in {"a": ["--style", "3"], "b": ["--style", "12"], "mix": ["--mix", "3:0.5,12:0.5"]}.items():
        outs[name] = tmp_path / f"{name}.png"
        result = invoke("apply", str(photo), str(outs[name]), *args)
        assert result.returncode == 0, result.stderr
    a, b, mix = (pixels(outs[k]) for k in ("a", "b", "mix"))
    assert np.abs(mix - a).mean() > 2 and np.abs(mix - b).mean() > 2


def test_strength_zero_returns_the_photo(tmp_path, photo):
    out = tmp_path / "same.png"
    assert invoke("apply", str(photo), str(out), "--strength", "0").returncode == 0
    assert np.array_equal(pixels(out), pixels(photo))


def test_preserve_color_keeps_the_photo_chroma(tmp_path, photo):
    plain, kept = tmp_path / "plain.png", tmp_path / "kept.png"
    assert invoke("apply", str(photo), str(plain)).returncode == 0
    assert invoke("apply", str(photo), str(kept), "--preserve-color").returncode == 0

    def chroma(path):
        return np.asarray(Image.open(path).convert("YCbCr"), dtype=np.int16)[..., 1:]

    assert np.abs(chroma(kept) - chroma(photo)).mean() < np.abs(chroma(plain) - chroma(photo)).mean() / 3


def test_stdin_to_stdout_in_process(photo):
    result = invoke("apply", "-", "-", "--format", "jpg", "--json", input=photo.read_bytes())
    assert result.returncode == 0, result.stderr
    image = Image.open(io.BytesIO(result.stdout))
    assert image.format == "JPEG" and image.size == (52, 41)
    assert json.loads(result.stderr)["output"] == "-"  # the report goes to stderr, away from the image bytes


def test_max_size_caps_the_long_side(tmp_path, photo):
    out = tmp_path / "small.png"
    assert invoke("apply", str(photo), str(out), "--max-size", "26").returncode == 0
    assert max(Image.open(out).size) == 26


def test_pytorch_examples_checkpoint_applies(tmp_path, photo):
    from tests.pytorch_examples_net import random_checkpoint

    model = tmp_path / "candy.pth"
    torch.save(random_checkpoint(), model)
    out = tmp_path / "candy.png"
    result = invoke("apply", str(photo), str(out), "--model", str(model), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["style"] == "candy"


def test_convert_then_apply_local_model_by_name(tmp_path, photo):
    from tests.pytorch_examples_net import random_checkpoint

    torch.save(random_checkpoint(), tmp_path / "candy.pth")
    (tmp_path / "models").mkdir()
    converted = invoke("convert", "candy.pth", "models/candy.safetensors", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    result = invoke("apply", str(photo), "out.png", "--model", "candy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out.png").size == (52, 41)
    listing = json.loads(invoke("models", "--json", cwd=tmp_path).stdout)
    assert {m["name"]: m["origin"] for m in listing["models"]}["candy"] == "local"


def test_greyscale_photo_stays_grey_only_with_preserve_color(tmp_path):
    grey = make_photo(tmp_path / "grey.png", (40, 32), mode="L")
    assert invoke("apply", str(grey), str(tmp_path / "colour.png")).returncode == 0
    assert invoke("apply", str(grey), str(tmp_path / "kept.png"), "--preserve-color").returncode == 0
    assert Image.open(tmp_path / "colour.png").mode == "RGB"
    assert Image.open(tmp_path / "kept.png").mode == "L"


def test_info_and_models(tmp_path):
    info = json.loads(invoke("info", "--json").stdout)
    assert info["cuda"] is False and "torch" in info and len(info["model_folders"]) == 3
    listing = json.loads(invoke("models", "--json", cwd=tmp_path).stdout)
    bundled = next(m for m in listing["models"] if m["name"] == "multistyle26")
    assert bundled["origin"] == "bundled" and len(bundled["styles"]) == 26 and bundled["default"]


def test_root_help_lists_every_command():
    result = invoke("--help")
    assert result.returncode == 0, result.stderr
    for command in ("apply", "convert", "models", "info", "train", "export"):
        assert re.search(rf"^\s+{command}\s", result.stdout.decode(), re.MULTILINE), command


def test_version():
    result = invoke("--version")
    assert result.returncode == 0 and result.stdout == f"stylize {__version__}\n".encode()


# ----------------------------------------------------------------------------------------------------------------- errors


def one_line_error(result, code=2):
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert "`" not in err, "settings are shown as flags, not with the API's backticks"
    return err


@pytest.mark.parametrize(
    "setup,args,expected",
    [
        (None, ["missing.jpg", "out.png"], "no such file"),
        ("text", ["notimage.jpg", "out.png"], "not an image"),
        ("truncated", ["broken.png", "out.png"], "truncated"),
        ("photo", ["photo.png", "out.xyz"], "xyz"),
        ("photo", ["photo.png", "out.png", "--style", "starry"], "unknown style"),
        ("photo", ["photo.png", "out.png", "--style", "40"], "out of range"),
        ("photo", ["photo.png", "out.png", "--model", "multistyle62"], "did you mean 'multistyle26'"),
        ("photo", ["photo.png", "out.png", "--mix", "3:abc"], "bad weight 'abc' for '3' in --mix"),
        pytest.param("photo", ["photo.png", "out.png", "--device", "cuda"], "CUDA is not available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
        ("photo", ["photo.png", "out.png", "--compile", "sometimes"], "unknown compile mode"),
        ("photo", ["photo.png", "photo.png"], "is the input file"),
        ("photo", ["photo.png", "photo.png", "--overwrite"], "is the input file"),
        ("badmodel", ["photo.png", "out.png", "--model", "bad.safetensors"], "not a valid safetensors"),
        ("mismatch", ["photo.png", "out.png", "--model", "mismatch.safetensors"], "its config expects"),
        ("photo", ["photo.png"], "Missing argument"),
        # settings in messages are written as this CLI's flags
        ("photo", ["photo.png", "out.png", "--tile", "banana"], "use --tile auto, --tile off or a side in pixels, e.g. --tile 512"),
        ("photo", ["photo.png", "out.png", "--memory-limit", "1MB"], "--memory-limit 1MB is too small"),
        ("photo", ["photo.png", "out.png", "--style", "3", "--mix", "3:1"], "give either a --style or a --mix, not both"),
    ],
)  # fmt: skip
def test_each_error_has_its_own_clear_message(tmp_path, setup, args, expected):
    if setup:
        make_photo(tmp_path / "photo.png", (40, 32))
    if setup == "text":
        (tmp_path / "notimage.jpg").write_text("just text")
    if setup == "truncated":
        data = (tmp_path / "photo.png").read_bytes()
        (tmp_path / "broken.png").write_bytes(data[: len(data) // 2])
    if setup == "badmodel":
        (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    if setup == "mismatch":
        config = GeneratorConfig(encoder_channels=(8, 8, 8), num_residual_blocks=1, decoder_channels=(8, 8))
        path = save_model(StyleModel(Generator(config), ["x"]), tmp_path / "mismatch.safetensors")
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(path, "pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(path)
        tensors["head.conv.weight"] = torch.zeros(8, 3, 5, 5)
        save_file(tensors, path, metadata=metadata)
    err = one_line_error(invoke("apply", *args, cwd=tmp_path))
    assert expected in err
    assert not (tmp_path / "out.png").exists()


def test_existing_output_needs_overwrite(tmp_path, photo):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    assert "pass --overwrite to replace it" in one_line_error(invoke("apply", str(photo), str(out)))
    assert out.read_bytes() == b"keep me"
    assert invoke("apply", str(photo), str(out), "--overwrite").returncode == 0
    assert Image.open(out).size == (52, 41)


def test_error_shows_names_with_brackets_as_they_are(tmp_path):
    """File names are printed verbatim, not read as Rich markup ('[bold]' is a style tag to Rich)."""
    err = one_line_error(invoke("apply", "[bold] draft.jpg", "out.png", cwd=tmp_path))
    assert err == "error: [bold] draft.jpg: no such file (check the path)\n"


def test_debug_shows_the_traceback(tmp_path):
    """``stylize --debug ...`` (or STYLIZE_DEBUG=1) lets the error propagate, so Python prints its traceback."""
    for args, env in ((("--debug", "apply", "missing.jpg", "out.png"), None), (("apply", "missing.jpg", "out.png"), {"STYLIZE_DEBUG": "1"})):
        with pytest.raises(StylizeError, match="no such file"):
            invoke(*args, cwd=tmp_path, env=env)
    # --debug is an option of the root command now: after the subcommand it is a usage error.
    assert "No such option: --debug" in one_line_error(invoke("apply", "missing.jpg", "out.png", "--debug", cwd=tmp_path))
