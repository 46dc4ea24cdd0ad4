"""The robustness corpus: hostile and broken inputs, each with the outcome the CLI must give.

Every :class:`Case` builds its inputs in an empty work folder, names the ``stylize`` command to run there (paths are
relative to the folder) and says what must happen: :class:`Fails` (exit code and a fragment of the one-line error) or
:class:`Succeeds` (the output file and a property it must have). ``tests/test_robustness.py`` runs every case and also
checks what holds for all of them: no traceback, inputs unchanged, no partial output, no ``*.stylize-tmp`` left behind.
Folder runs that report some files as failed and write the rest use :class:`FilesFail`, which says per case which
files fail and which are written. ``scripts/bench/robustness_table.py`` prints the table in ``docs/robustness.md`` from this
list, so the two cannot drift.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylize.config import GeneratorConfig
from stylize.network.generator import Generator
from stylize.network.modelfile import StyleModel, save_model

# ------------------------------------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Fails:
    """The command exits with ``exit_code`` and one ``error: ...`` line on stderr that contains ``fragment``."""

    exit_code: int
    fragment: str

    def describe(self) -> str:
        return f"exit {self.exit_code}: `{self.fragment}`"


@dataclass(frozen=True)
class Succeeds:
    """The command exits 0 and ``check(work_folder)`` holds (it raises AssertionError otherwise).

    Nothing but ``output`` (and the folders it goes into) may appear or change.
    """

    output: str | tuple[str, ...]  # the file(s) the command writes, relative to the work folder
    check: Callable[[Path], None]
    property: str  # what ``check`` verifies, for the table
    note: str | None = None  # a fragment that must appear on stderr (a warning the user should see)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,) if isinstance(self.output, str) else self.output

    def describe(self) -> str:
        return f"exit 0: {self.property}" + (f"; says `{self.note}`" if self.note else "")


@dataclass(frozen=True)
class FilesFail:
    """A folder run that reports some files as failed and does the others: exit 1, no ``error:`` line.

    For each ``(input, fragment)`` in ``failed`` a line on stderr names the input and contains the fragment; the
    ``written`` outputs exist and ``check`` holds; nothing else appears or changes (so a failed file has no output,
    not even a partial one).
    """

    failed: tuple[tuple[str, str], ...]
    written: tuple[str, ...]
    check: Callable[[Path], None]
    property: str  # what is written, for the table

    def describe(self) -> str:
        reasons = "; ".join(f"{name}: `{fragment}`" for name, fragment in self.failed)
        return f"exit 1: {reasons}; {self.property}"


@dataclass(frozen=True)
class Interrupt:
    """For runner "kill-9": how to interrupt the first run before the same command runs again.

    The first run is killed with SIGKILL as soon as ``when(work_folder)`` is true; then ``then(work_folder)`` must hold
    (what the kill left: nothing partial under a final name). The ``leaves`` files are written next, as a kill in the
    middle of a write would leave them, so that the rerun must clean them up whatever the moment of the kill was. The
    case's outcome is checked on the second, uninterrupted run.
    """

    when: Callable[[Path], bool]
    then: Callable[[Path], None]
    moment: str  # when the kill comes, for the table
    # Seconds the first run spends on each stylized image on top of the work (the test runner slows
    # stylize.pipeline.stages.stylize in that process), so that a kill lands between two images; 0: full speed.
    seconds_per_image: float = 0.0
    # (path, bytes) of temporaries a kill during a write leaves; "{pid}" in a path is the killed process's id, as
    # write_atomic names its temporaries (.<name>.<pid>-<8 hex digits>.stylize-tmp).
    leaves: tuple[tuple[str, bytes], ...] = ()


#: How a case is run. "cli": ``stylize.cli.main`` in this process (fast); "subprocess": the real console entry point;
#: "unprivileged": a subprocess that file permissions apply to (as root: with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
#: dropped, so that root is refused like any user), for permission cases;
#: "fsize": a subprocess whose file-size limit (RLIMIT_FSIZE) is 1 kB, so that writes fail with EFBIG like a full disk;
#: "kill-9": a subprocess killed with SIGKILL part-way (see :class:`Interrupt`), then the same command run again.
RUNNERS = ("cli", "subprocess", "unprivileged", "fsize", "kill-9")


@dataclass(frozen=True)
class Case:
    name: str  # the test id
    input: str  # what the input is, for the table
    build: Callable[[Path], None]  # writes the inputs into the (empty) work folder
    args: tuple[str, ...]  # the stylize command line, paths relative to the work folder
    expect: Fails | Succeeds | FilesFail
    runner: str = "cli"
    never: tuple[str, ...] = field(default=())  # files that must not exist afterwards (e.g. a marker a payload would create)
    interrupt: Interrupt | None = None  # runner "kill-9" only

    def __post_init__(self) -> None:
        assert self.runner in RUNNERS, self.runner
        assert (self.runner == "kill-9") == (self.interrupt is not None), f"{self.name}: kill-9 goes with an Interrupt"


# ------------------------------------------------------------------------------------------------------------- builders

TINY = "tiny.safetensors"  # a small generator, so that successful cases stay fast
TINY_CONFIG = GeneratorConfig(encoder_channels=(4, 4, 4), num_residual_blocks=1, decoder_channels=(4, 4), num_styles=2)
MARKER = "PWNED"  # what the malicious pickles try to create


def picture(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth, deterministic picture with some noise, in any Pillow mode."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), np.full_like(x, 0.5)], axis=-1)
    rgb = (rgb * 200 + rng.integers(0, 55, rgb.shape)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    return image if mode == "RGB" else image.convert(mode)


def tiny_model(folder: Path, name: str = TINY, edit: Callable[[dict, dict], None] | None = None) -> Path:
    """Save the tiny model; ``edit(tensors, meta)`` may change its tensors and metadata before they are written."""
    generator = Generator(TINY_CONFIG)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.copy_(torch.linspace(-0.3, 0.3, parameter.numel()).reshape(parameter.shape))
    path = save_model(StyleModel(generator, ["a", "b"], provenance={"source": "robustness corpus"}), folder / name)
    if edit is not None:
        import json

        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(path, "pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(path)
        meta = json.loads(metadata["stylize"])
        edit(tensors, meta)
        save_file(tensors, path, metadata={**metadata, "stylize": json.dumps(meta)})
    return path


def with_tiny(build: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(folder: Path) -> None:
        tiny_model(folder)
        build(folder)

    return both


def saved(name: str, image: Image.Image | Callable[[], Image.Image], **options) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (image() if callable(image) else image).save(folder / name, **options)

    return build


def raw(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (folder / name).write_bytes(data() if callable(data) else data)

    return build


def steps(*builders: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        for builder in builders:
            builder(folder)

    return build


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png_claiming(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims ``width`` x ``height``: a decompression bomb's header, written by hand."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def bad_crc_png() -> bytes:
    data = bytearray(encoded(picture(32, 24), "PNG"))
    start = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[start - 4 : start])
    data[start + 4 + length] ^= 0xFF  # the IDAT chunk's CRC: Pillow alone would decode the damaged data silently
    return bytes(data)


def frames_gif() -> bytes:
    frames = [picture(32, 24, seed=i).convert("P") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def pages_tiff() -> bytes:
    pages = [picture(32, 24, seed=0), picture(20, 16, seed=1)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return encoded(picture(40, 24), "JPEG", exif=exif.tobytes())


def palette_with_transparency() -> Image.Image:
    image = picture(32, 24).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    return image


def sixteen_bit_png() -> Image.Image:
    values = np.linspace(0, 65535, 32 * 24).reshape(24, 32).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16", image.mode
    return image


def rgba_image() -> Image.Image:
    return Image.merge("RGBA", (*picture(32, 24).split(), picture(32, 24, "L").point(lambda v: v // 2)))


def cmyk_jpeg() -> bytes:
    return encoded(picture(32, 24).convert("CMYK"), "JPEG")


class _RunsCode:
    """Unpickling this calls ``pathlib.Path.touch(MARKER)``: the payload the loader must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def evil_pickle(name: str, zipped: bool) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        payload = {"conv1.conv2d.weight": _RunsCode((folder / MARKER).resolve())}
        if zipped:  # the torch.save zip container
            torch.save(payload, folder / name)
        else:  # a bare pickle stream, as very old checkpoints are
            (folder / name).write_bytes(pickle.dumps(payload))

    return build


def pytorch_examples_pth(folder: Path) -> None:
    from tests.pytorch_examples_net import random_checkpoint

    torch.save(random_checkpoint(), folder / "candy.pth")


def truncated_model(folder: Path) -> None:
    path = tiny_model(folder, "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-64])


def huge_header(folder: Path) -> None:
    (folder / "huge.safetensors").write_bytes((10**12).to_bytes(8, "little") + b'{"__metadata__":{}}')


def plain_safetensors(folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, folder / "plain.safetensors")


def set_tensor(key: str, value: torch.Tensor) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, meta: dict) -> None:
        tensors[key] = value

    return edit


def set_meta(path: tuple[str, ...], value: object) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, meta: dict) -> None:
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def edited_model(name: str, edit: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        tiny_model(folder, name, edit)

    return build


def symlink(name: str, target: str) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (folder / name).symlink_to(target)

    return build


def mkdir(name: str, mode: int = 0o755) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (folder / name).mkdir()
        (folder / name).chmod(mode)

    return build


def chmod(name: str, mode: int) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (folder / name).chmod(mode)

    return build


# --------------------------------------------------------------------------------------------------------------- checks


def image_of(size: tuple[int, int], mode: str | None = None, fmt: str | None = None, output: str = "out.png"):
    def check(folder: Path) -> None:
        with Image.open(folder / output) as image:
            assert image.size == size, f"{output} is {image.size}, expected {size}"
            if mode is not None:
                assert image.mode == mode, f"{output} has mode {image.mode}, expected {mode}"
            if fmt is not None:
                assert image.format == fmt, f"{output} is {image.format}, expected {fmt}"
            image.load()

    return check


def alpha_kept(folder: Path) -> None:
    with Image.open(folder / "out.png") as image:
        assert image.mode == "RGBA", image.mode
        alpha = np.asarray(image.getchannel("A"))
        assert alpha.min() < 255, "the transparent pixels lost their transparency"


def replaced_link_not_target(folder: Path) -> None:
    out = folder / "out.png"
    assert not out.is_symlink(), "the link should have been replaced by the new file"
    assert (folder / "elsewhere" / "keep.png").read_bytes() == KEEP, "the link's target was written"
    image_of((32, 24))(folder)


def loads_as_model(folder: Path) -> None:
    from stylize.network.modelfile import load_model

    model = load_model(folder / "out.safetensors")
    assert model.styles == ["candy"] and model.provenance["converted_from"] == "candy.pth"


def after_seconds(seconds: float) -> Callable[[Path], bool]:
    """An ``Interrupt.when`` that holds once ``seconds`` have passed since it was first asked."""
    started: list[float] = []

    def when(_folder: Path) -> bool:
        if not started:
            started.append(time.monotonic())
        return time.monotonic() - started[0] >= seconds

    return when


def no_partial_model(folder: Path) -> None:
    if (folder / "out.safetensors").exists():  # a kill after the rename: then the file must be whole
        loads_as_model(folder)
        (folder / "out.safetensors").unlink()  # so that the same command can run again


KEEP = b"not yours to overwrite"
NON_UTF8 = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes that are not valid UTF-8
LONG = "n" * 240 + ".png"  # 244 bytes: within the usual 255-byte limit, too long for a naive temporary name
TOO_LONG = "n" * 300 + ".png"  # over the limit of every common file system

# -- paintings and videos


BUNDLED_PAINTING = Path(__file__).resolve().parent.parent / "stylize" / "data" / "styles" / "wave.jpg"


def painting(name: str = "painting.jpg") -> Callable[[Path], None]:
    """A copy of a bundled painting in the work folder."""

    def build(folder: Path) -> None:
        (folder / name).write_bytes(BUNDLED_PAINTING.read_bytes())

    return build


def clip(name: str, *, frames: int = 6, audio: str | None = "aac", pix_fmt: str = "yuv420p", codec: str = "libx264",
         video: bool = True, size: tuple[int, int] = (48, 32)) -> Callable[[Path], None]:  # fmt: skip
    """A tiny clip written with PyAV: moving gradients, and a short tone in ``audio`` (None: silent)."""

    def build(folder: Path) -> None:
        import av

        with av.open(str(folder / name), "w") as container:
            stream = None
            if video:
                stream = container.add_stream(codec, rate=12, options={"preset": "ultrafast"})
                stream.width, stream.height, stream.pix_fmt = *size, pix_fmt
            sound = None
            if audio:
                sound = container.add_stream(audio, rate=16000)
                if audio == "pcm_s16le":
                    sound.format = "s16"
            for index in range(frames if video else 0):
                pixels = np.asarray(picture(*size, seed=index))
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
            if sound is not None:
                tone = (0.2 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 440)).astype(np.float32)[None]
                samples = tone if audio != "pcm_s16le" else (tone * 32767).astype(np.int16)
                layout_format = "fltp" if audio != "pcm_s16le" else "s16"
                chunk = 1024 if audio == "aac" else 8000
                for start in range(0, samples.shape[1], chunk):
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + chunk]), format=layout_format, layout="mono")
                    frame.sample_rate = 16000
                    for packet in sound.encode(frame):
                        container.mux(packet)
            for part in (stream, sound):
                if part is not None:
                    for packet in part.encode():
                        container.mux(packet)

    return build


def truncated_clip(folder: Path) -> None:
    clip("whole.mp4", frames=24)(folder)
    data = (folder / "whole.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    (folder / "whole.mp4").unlink()


def video_of(frames: int, size: tuple[int, int], output: str = "out.mp4", audio: bool = True) -> Callable[[Path], None]:
    """Checks that ``output`` is a video of ``frames`` frames of ``size``, with an audio stream when ``audio``."""

    def check(folder: Path) -> None:
        import av

        with av.open(str(folder / output)) as container:
            video = container.streams.video[0]
            decoded = sum(1 for _ in container.decode(video))
            assert decoded == frames and (video.width, video.height) == size, (decoded, video.width, video.height)
            assert bool(container.streams.audio) == audio

    return check


PAINTING = painting()


PHOTO = saved("photo.png", lambda: picture(32, 24))
APPLY = ("apply", "photo.png", "out.png", "--model", TINY)


def apply_to(source: str, target: str = "out.png", *extra: str) -> tuple[str, ...]:
    return ("apply", source, target, "--model", TINY, *extra)


# ---------------------------------------------------------------------------------------------------------------- cases

CASES: list[Case] = [
    # -- images that are not images
    Case("zero-byte", "empty file named `.jpg`", with_tiny(raw("empty.jpg", b"")), apply_to("empty.jpg"), Fails(2, "is empty (0 bytes)")),
    Case("text-as-jpg", "a text file named `.jpg`", with_tiny(raw("notes.jpg", b"shopping list: eggs, milk\n")), apply_to("notes.jpg"),
         Fails(2, "is not an image")),
    Case("truncated-jpeg", "JPEG cut at half its length", with_tiny(raw("cut.jpg", lambda: encoded(picture(64, 48), "JPEG")[:400])),
         apply_to("cut.jpg"), Fails(2, "is truncated: the JPEG data ends early")),
    Case("truncated-png", "PNG cut at half its length", with_tiny(raw("cut.png", lambda: (d := encoded(picture(64, 48), "PNG"))[: len(d) // 2])),
         apply_to("cut.png"), Fails(2, "is truncated: the PNG data ends early")),
    Case("png-bad-crc", "PNG whose IDAT CRC is wrong", with_tiny(raw("bad.png", bad_crc_png)), apply_to("bad.png"),
         Fails(2, "'IDAT' chunk fails its CRC check")),
    Case("directory-named-jpg", "a folder named `x.jpg`", with_tiny(mkdir("x.jpg")), apply_to("x.jpg"), Fails(2, "x.jpg is a folder")),
    Case("missing-input", "a path that does not exist", with_tiny(lambda folder: None), apply_to("nope.jpg"), Fails(2, "no such file")),
    Case("symlink-loop", "a symlink pointing at itself", with_tiny(symlink("loop.jpg", "loop.jpg")), apply_to("loop.jpg"),
         Fails(2, "could not open loop.jpg")),
    Case("unreadable", "a photo with mode 000, run as an ordinary user", with_tiny(steps(PHOTO, chmod("photo.png", 0))), APPLY,
         Fails(2, "permission denied"), runner="unprivileged"),
    # -- sizes
    Case("1x1", "1x1 PNG", with_tiny(saved("dot.png", lambda: picture(1, 1))), apply_to("dot.png"), Fails(2, "at least 8 pixels on each side")),
    Case("1xN", "1x64 PNG", with_tiny(saved("thin.png", lambda: picture(1, 64))), apply_to("thin.png"), Fails(2, "at least 8 pixels on each side")),
    Case("Nx1", "64x1 PNG", with_tiny(saved("flat.png", lambda: picture(64, 1))), apply_to("flat.png"), Fails(2, "at least 8 pixels on each side")),
    Case("8x8", "8x8 PNG, the smallest accepted", with_tiny(saved("small.png", lambda: picture(8, 8))), apply_to("small.png"),
         Succeeds("out.png", image_of((8, 8)), "8x8 output")),
    Case("bomb-header", "100-byte PNG whose header claims 50000x50000", with_tiny(raw("bomb.png", lambda: png_claiming(50_000, 50_000))),
         apply_to("bomb.png"), Fails(2, "raise the limit with --max-pixels")),
    Case("over-max-pixels", "32x24 photo with `--max-pixels 500`", with_tiny(PHOTO), (*APPLY, "--max-pixels", "500"),
         Fails(2, "is 32x24 (0.0 megapixels), more pixels than the limit")),
    # -- colour modes, frames, orientation
    Case("cmyk-jpeg", "CMYK JPEG", with_tiny(raw("cmyk.jpg", cmyk_jpeg)), apply_to("cmyk.jpg", "out.jpg"),
         Succeeds("out.jpg", image_of((32, 24), "RGB", "JPEG", "out.jpg"), "RGB JPEG, same size")),
    Case("16-bit-png", "16-bit greyscale PNG", with_tiny(saved("deep.png", sixteen_bit_png)), apply_to("deep.png"),
         Succeeds("out.png", image_of((32, 24), "RGB"), "8-bit RGB PNG, same size")),
    Case("greyscale", "8-bit greyscale PNG", with_tiny(saved("grey.png", lambda: picture(32, 24, "L"))), apply_to("grey.png"),
         Succeeds("out.png", image_of((32, 24), "RGB"), "RGB output (stays grey only with --preserve-color)")),
    Case("palette-transparency", "palette PNG with a transparent index", with_tiny(saved("pal.png", palette_with_transparency)), apply_to("pal.png"),
         Succeeds("out.png", alpha_kept, "RGBA PNG, transparency kept")),
    Case("rgba", "RGBA PNG", with_tiny(saved("rgba.png", rgba_image)),
         apply_to("rgba.png"), Succeeds("out.png", alpha_kept, "RGBA PNG, alpha kept")),
    Case("animated-gif", "3-frame animated GIF", with_tiny(raw("anim.gif", frames_gif)), apply_to("anim.gif"),
         Succeeds("out.png", image_of((32, 24)), "first frame stylized", note="only the first was stylized")),
    Case("multipage-tiff", "2-page TIFF (32x24, then 20x16)", with_tiny(raw("pages.tif", pages_tiff)), apply_to("pages.tif"),
         Succeeds("out.png", image_of((32, 24)), "first page stylized", note="only the first was stylized")),
    Case("exif-rotated", "40x24 JPEG with EXIF orientation 6", with_tiny(raw("rot.jpg", rotated_jpeg)), apply_to("rot.jpg"),
         Succeeds("out.png", image_of((24, 40)), "24x40 output (upright)")),
    Case("exif-rotated-subprocess", "the same, real console script", with_tiny(raw("rot.jpg", rotated_jpeg)), apply_to("rot.jpg", "out.jpg"),
         Succeeds("out.jpg", image_of((24, 40), fmt="JPEG", output="out.jpg"), "24x40 JPEG"), runner="subprocess"),
    # -- names
    Case("non-utf8-names", "input and output names with bytes that are not UTF-8", with_tiny(saved(NON_UTF8, lambda: picture(32, 24))),
         apply_to(NON_UTF8, "out-" + NON_UTF8), Succeeds("out-" + NON_UTF8, image_of((32, 24), output="out-" + NON_UTF8), "written under that name")),
    Case("long-names", "244-byte input and output names", with_tiny(saved(LONG, lambda: picture(32, 24))), apply_to(LONG, "o" + LONG[1:]),
         Succeeds("o" + LONG[1:], image_of((32, 24), output="o" + LONG[1:]), "written under that name")),
    Case("name-too-long", "a 304-byte output name", with_tiny(PHOTO), apply_to("photo.png", TOO_LONG), Fails(2, "the file name is too long")),
    Case("input-name-too-long", "a 304-byte input name", with_tiny(lambda folder: None), apply_to(TOO_LONG), Fails(2, "File name too long")),
    # -- where the output goes
    Case("output-is-input", "OUT is IN", with_tiny(PHOTO), apply_to("photo.png", "photo.png", "--overwrite"), Fails(2, "is the input file")),
    Case("output-is-input-via-link", "OUT is a symlink to IN", with_tiny(steps(PHOTO, symlink("out.png", "photo.png"))), (*APPLY, "--overwrite"),
         Fails(2, "is the input file")),
    Case("output-exists", "OUT exists, no `--overwrite`", with_tiny(steps(PHOTO, raw("out.png", KEEP))), APPLY, Fails(2, "pass --overwrite")),
    Case("output-symlink", "OUT is a symlink to a file elsewhere", with_tiny(steps(PHOTO, mkdir("elsewhere"), raw("elsewhere/keep.png", KEEP),
         symlink("out.png", "elsewhere/keep.png"))), APPLY, Fails(2, "out.png is a symbolic link")),
    Case("output-symlink-overwrite", "the same with `--overwrite`", with_tiny(steps(PHOTO, mkdir("elsewhere"), raw("elsewhere/keep.png", KEEP),
         symlink("out.png", "elsewhere/keep.png"))), (*APPLY, "--overwrite"),
         Succeeds("out.png", replaced_link_not_target, "the link is replaced by the image; its target is untouched")),
    Case("output-dangling-symlink", "OUT is a symlink to a missing file elsewhere", with_tiny(steps(PHOTO, mkdir("elsewhere"),
         symlink("out.png", "elsewhere/new.png"))), APPLY, Fails(2, "out.png is a symbolic link"), never=("elsewhere/new.png",)),
    Case("output-parent-is-file", "OUT's folder is a file", with_tiny(steps(PHOTO, raw("file", b"x"))), apply_to("photo.png", "file/out.png"),
         Fails(2, "is not a folder")),
    Case("output-folder-read-only", "OUT in a folder with mode 555, run as an ordinary user", with_tiny(steps(PHOTO, mkdir("ro", 0o555))),
         apply_to("photo.png", "ro/out.png"), Fails(2, "is read-only or not yours"), runner="unprivileged"),
    Case("disk-full", "writing a 2 kB BMP fails with EFBIG (file-size limit 1 kB)", with_tiny(PHOTO), apply_to("photo.png", "out.bmp"),
         Fails(1, "disk full while writing out.bmp (nothing was written)"),
         runner="fsize"),
    Case("unknown-extension", "OUT ends in `.xyz`", with_tiny(PHOTO), apply_to("photo.png", "out.xyz"), Fails(2, "cannot tell the output format")),
    # -- model files
    Case("model-truncated", "safetensors model missing its last 64 bytes", steps(PHOTO, truncated_model),
         ("apply", "photo.png", "out.png", "--model", "cut.safetensors"), Fails(2, "is truncated or damaged")),
    Case("model-zero-byte", "empty `.safetensors`", steps(PHOTO, raw("empty.safetensors", b"")),
         ("apply", "photo.png", "out.png", "--model", "empty.safetensors"), Fails(2, "too short to be safetensors")),
    Case("model-huge-header", "header length field says 1 TB", steps(PHOTO, huge_header),
         ("apply", "photo.png", "out.png", "--model", "huge.safetensors"), Fails(2, "header claims 1000000000000 bytes")),
    Case("model-tensors-vs-metadata", "metadata says 3 residual blocks, tensors hold 1",
         steps(PHOTO, edited_model("m.safetensors", set_meta(("generator", "num_residual_blocks"), 3))),
         ("apply", "photo.png", "out.png", "--model", "m.safetensors"), Fails(2, "tensors do not match its generator config")),
    Case("model-wrong-shape", "a tensor whose shape differs from the config's",
         steps(PHOTO, edited_model("m.safetensors", set_tensor("head.conv.weight", torch.zeros(4, 3, 3, 3)))),
         ("apply", "photo.png", "out.png", "--model", "m.safetensors"), Fails(2, "its config expects")),
    Case("model-huge-config", "metadata claims 1,000,000-channel layers (a memory bomb)",
         steps(PHOTO, edited_model("m.safetensors", set_meta(("generator", "encoder_channels"), [4, 4, 1_000_000]))),
         ("apply", "photo.png", "out.png", "--model", "m.safetensors"), Fails(2, "has an implausible generator config (a width of 1000000)")),
    Case("model-nan", "NaN in a weight", steps(PHOTO, edited_model("m.safetensors", set_tensor("tail.conv.bias", torch.full((3,), float("nan"))))),
         ("apply", "photo.png", "out.png", "--model", "m.safetensors"), Fails(2, "contains NaN or infinite values")),
    Case("model-future-version", "`format_version` 99", steps(PHOTO, edited_model("m.safetensors", set_meta(("format_version",), 99))),
         ("apply", "photo.png", "out.png", "--model", "m.safetensors"), Fails(2, "uses model format version 99")),
    Case("model-not-stylize", "a safetensors file without stylize metadata",
         steps(PHOTO, plain_safetensors),
         ("apply", "photo.png", "out.png", "--model", "plain.safetensors"), Fails(2, "not a stylize model")),
    Case("pickle-runs-code", "`.pth` whose unpickling would create a file", steps(PHOTO, evil_pickle("evil.pth", zipped=True)),
         ("apply", "photo.png", "out.png", "--model", "evil.pth"), Fails(2, "refusing to load evil.pth"), never=(MARKER,)),
    Case("pickle-runs-code-convert", "bare pickle stream, converted, real console script", evil_pickle("evil.model", zipped=False),
         ("convert", "evil.model", "out.safetensors"), Fails(2, "evil.model"), runner="subprocess", never=(MARKER,)),
    Case("convert-pth", "a pytorch/examples `.pth` (the happy path)", pytorch_examples_pth, ("convert", "candy.pth", "out.safetensors"),
         Succeeds("out.safetensors", loads_as_model, "a loadable model with provenance")),
    Case("convert-disk-full", "converting while writes fail with EFBIG", pytorch_examples_pth, ("convert", "candy.pth", "out.safetensors"),
         Fails(1, "disk full while writing"), runner="fsize"),
    Case("convert-output-is-input", "OUT is IN", lambda folder: tiny_model(folder), ("convert", TINY, TINY, "--overwrite"),
         Fails(2, "is the input file")),
    # -- paintings as the style (the bundled arbitrary-style model)
    Case("painting-not-an-image", "a text file given as the painting", steps(PHOTO, raw("notes.jpg", b"shopping list\n")),
         ("apply", "photo.png", "out.png", "--style-image", "notes.jpg"), Fails(2, "painting notes.jpg is not an image")),
    Case("painting-truncated", "a JPEG painting cut short", steps(PHOTO, raw("cut.jpg", lambda: encoded(picture(128, 96), "JPEG")[:500])),
         ("apply", "photo.png", "out.png", "--style-image", "cut.jpg"), Fails(2, "painting cut.jpg is")),
    Case("painting-too-small", "a 48x48 painting", steps(PHOTO, saved("small.png", lambda: picture(48, 48))),
         ("apply", "photo.png", "out.png", "--style-image", "small.png"), Fails(2, "too small (48x48) to take a style from")),
    Case("painting-missing", "a painting path that does not exist", PHOTO, ("apply", "photo.png", "out.png", "--style-image", "nope.jpg"),
         Fails(2, "painting nope.jpg: no such file")),
    Case("painting-fixed-style-model", "a painting with a model of fixed styles", with_tiny(steps(PHOTO, PAINTING)),
         (*APPLY, "--style-image", "painting.jpg"), Fails(2, "has a fixed set of styles")),
    Case("painting-bad-weight", "`--style-image painting.jpg:-1`", steps(PHOTO, PAINTING),
         ("apply", "photo.png", "out.png", "--style-image", "painting.jpg:-1"), Fails(2, "must be a non-negative number")),
    Case("painting-ok", "a painting (the happy path)", steps(PHOTO, PAINTING), ("apply", "photo.png", "out.png", "--style-image", "painting.jpg"),
         Succeeds("out.png", image_of((32, 24)), "32x24 PNG")),
    # -- videos
    Case("video-not-a-video", "a JPEG named `.mp4`", with_tiny(raw("clip.mp4", lambda: encoded(picture(32, 24), "JPEG"))),
         (*apply_to("clip.mp4", "out.mp4"),), Fails(2, "clip.mp4 is an image, not a video")),
    Case("video-random-bytes", "random bytes named `.mp4`", with_tiny(raw("clip.mp4", lambda: np.random.default_rng(1).bytes(4096))),
         (*apply_to("clip.mp4", "out.mp4"),), Fails(2, "clip.mp4 is not a video file")),
    Case("video-truncated", "an MP4 cut at half its length", with_tiny(truncated_clip), (*apply_to("cut.mp4", "out.mp4"),),
         Fails(2, "cut.mp4 is")),
    Case("video-audio-only", "an MP4 with only an audio stream", with_tiny(clip("sound.mp4", video=False)), (*apply_to("sound.mp4", "out.mp4"),),
         Fails(2, "has no video stream, only audio")),
    Case("video-zero-frames", "an MP4 whose video stream has no frames", with_tiny(clip("empty.mp4", frames=0)),
         (*apply_to("empty.mp4", "out.mp4"),), Fails(2, "has no video")),
    Case("video-output-exists", "OUT exists, no `--overwrite`", with_tiny(steps(clip("clip.mp4"), raw("out.mp4", KEEP))),
         (*apply_to("clip.mp4", "out.mp4"),), Fails(2, "pass --overwrite")),
    Case("video-10-bit", "a 10-bit 4:2:0 H.264 clip", with_tiny(clip("deep.mp4", pix_fmt="yuv420p10le")), (*apply_to("deep.mp4", "out.mp4"),),
         Succeeds("out.mp4", video_of(6, (48, 32)), "6 frames, 8-bit 4:2:0, audio copied", note="8-bit")),
    Case("video-444", "a 4:4:4 H.264 clip", with_tiny(clip("full.mp4", pix_fmt="yuv444p")), (*apply_to("full.mp4", "out.mp4"),),
         Succeeds("out.mp4", video_of(6, (48, 32)), "6 frames, 4:2:0", note="written as yuv420p")),
    Case("video-pcm-audio-in-mp4", "a MOV with PCM audio written as MP4", with_tiny(clip("pcm.mov", audio="pcm_s16le")),
         (*apply_to("pcm.mov", "out.mp4"),), Succeeds("out.mp4", video_of(6, (48, 32)), "audio re-encoded to AAC", note="re-encoded to aac")),
    Case("video-odd-size", "a 47x33 clip (4:4:4, so that the odd size exists)", with_tiny(clip("odd.mkv", pix_fmt="yuv444p", size=(47, 33))),
         (*apply_to("odd.mkv", "out.mp4"),), Succeeds("out.mp4", video_of(6, (46, 32)), "46x32: one column and row cropped", note="crop")),
    Case("video-tiny", "a 6x6 clip", with_tiny(clip("tiny.mp4", size=(6, 6))), (*apply_to("tiny.mp4", "out.mp4"),),
         Fails(2, "at least 8 pixels on each side")),
    Case("convert-kill-9", "`kill -9` during `convert`, then the same command again", pytorch_examples_pth,
         ("convert", "candy.pth", "out.safetensors"),
         Succeeds("out.safetensors", loads_as_model,
                  "after the kill no partial model; the rerun converts and removes the temporary a killed write leaves"),
         runner="kill-9",
         interrupt=Interrupt(after_seconds(0.5), no_partial_model, "0.5 s after start (start-up or the write)",
                             leaves=((".out.safetensors.{pid}-deadbeef.stylize-tmp", b"half a model"),))),
]


def by_name() -> dict[str, Case]:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    return {case.name: case for case in CASES}


# ------------------------------------------------------------------------------------------ folder mode (issue 3)

FOLDER = ("--model", TINY, "--workers", "0")  # decode in-process: tiny images, no worker start-up
KILLED_PHOTOS = [f"in/p{i}.png" for i in range(6)]


def photos(*names: str, size: tuple[int, int] = (32, 24)) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        for i, name in enumerate(names):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            picture(*size, seed=i).save(folder / name)

    return build


def images_of(size: tuple[int, int], *outputs: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        for output in outputs:
            image_of(size, output=output)(folder)

    return check


def final_files(folder: Path) -> list[Path]:
    """Files under ``folder`` that carry a final name (not hidden: temporaries are ``.name.*.stylize-tmp``)."""
    return [path for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")]


def some_outputs_exist(folder: Path) -> bool:
    return (folder / "out").is_dir() and bool(final_files(folder / "out"))


def killed_mid_batch(folder: Path) -> None:
    finished = final_files(folder / "out")
    assert 1 <= len(finished) < len(KILLED_PHOTOS), f"the kill came too late to test anything: {finished}"
    for path in finished:  # nothing partial under a final name
        image_of((32, 24), output=str(path.relative_to(folder)))(folder)


# ---------------------------------------------------------------------------------------------- training (issue 4)

TRAIN = ("train", "--style", "style.png", "--content-dir", "content", "--out", "m.safetensors",
         "--image-size", "32", "--style-size", "40", "--batch-size", "1", "--workers", "0", "--preview-every", "0")  # fmt: skip
TRAIN_STEPS = 16


def training_inputs(folder: Path) -> None:
    photos("content/c0.png", "content/c1.png", "content/sub/c2.jpg", size=(40, 32))(folder)
    picture(64, 64, seed=9).save(folder / "style.png")  # the default init predicts its style: 64 px a side at least


def checkpoint_step(folder: Path) -> int:
    from stylize.training.checkpoint import load_checkpoint

    return int(load_checkpoint(folder / "m.ckpt")["step"])


def killed_mid_training(folder: Path) -> None:
    assert not (folder / "m.safetensors").exists(), "the kill came after the model was saved"
    step = checkpoint_step(folder)  # the checkpoint under its final name loads: it is whole
    assert 0 < step < TRAIN_STEPS, step


def trained_to_the_end(folder: Path) -> None:
    from stylize.network.modelfile import load_model

    model = load_model(folder / "m.safetensors")
    assert model.styles == ["style"] and model.training["steps"] == TRAIN_STEPS, model.training
    assert checkpoint_step(folder) == TRAIN_STEPS


CASES += [
    Case("folder-symlink-loop", "DIR holds a good photo, `loop.jpg` (a link to itself) and `sub/up` (a link to DIR)",
         with_tiny(steps(photos("in/photo.png"), mkdir("in/sub"), symlink("in/loop.jpg", "loop.jpg"), symlink("in/sub/up", ".."))),
         ("apply", "in", "out", *FOLDER),
         FilesFail((("in/loop.jpg", "could not open in/loop.jpg: Too many levels of symbolic links"),), ("out/photo.png",),
                   images_of((32, 24), "out/photo.png"), "the photo is written once (the folder loop is walked once)")),
    Case("folder-outdir-inside-dir", "OUTDIR is DIR/styled, which holds an earlier run's output",
         with_tiny(photos("in/photo.png", "in/styled/old.png")), ("apply", "in", "in/styled", *FOLDER),
         Succeeds("in/styled/photo.png", images_of((32, 24), "in/styled/photo.png"),
                  "only in/styled/photo.png is written: OUTDIR's files are not taken for inputs")),
    Case("folder-outdir-via-link", "DIR holds `up`, a link to its parent, where OUTDIR holds an earlier run's output",
         with_tiny(steps(photos("in/photo.png", "out/old.png"), symlink("in/up", ".."))), ("apply", "in", "out", *FOLDER),
         Succeeds("out/photo.png", images_of((32, 24), "out/photo.png"),
                  "only out/photo.png is written: OUTDIR is not walked through the link")),
    Case("folder-escape-symlink", "with `--overwrite`: OUTDIR/a.png links to a file outside, OUTDIR/sub to a folder outside",
         with_tiny(steps(photos("in/a.png", "in/c.png", "in/sub/b.png"), mkdir("elsewhere"), raw("elsewhere/keep.png", KEEP),
                         mkdir("out"), symlink("out/a.png", "../elsewhere/keep.png"), symlink("out/sub", "../elsewhere"))),
         ("apply", "in", "out", "--overwrite", *FOLDER),
         FilesFail((("in/a.png", "output path leaves OUTDIR through a symlink"), ("in/sub/b.png", "leaves OUTDIR")),
                   ("out/c.png",), images_of((32, 24), "out/c.png"), "c.png is written; nothing outside OUTDIR is"),
         never=("elsewhere/b.png",)),
    Case("folder-escape-dotdot", "`--suffix /../../x` (a suffix that would climb out of OUTDIR)", with_tiny(photos("in/a.png")),
         ("apply", "in", "out", "--suffix", "/../../x", *FOLDER), Fails(2, "may not contain a path separator")),
    Case("folder-disk-full", "writes fail with EFBIG mid-batch: an 8x8 PNG fits in 1 kB, a 32x24 BMP does not",
         with_tiny(steps(photos("in/a-small.png", size=(8, 8)), photos("in/b-big.bmp"))), ("apply", "in", "out", *FOLDER),
         FilesFail((("in/b-big.bmp", "disk full while writing out/b-big.bmp (nothing was written)"),), ("out/a-small.png",),
                   images_of((8, 8), "out/a-small.png"), "the PNG is written whole"),
         runner="fsize"),
    Case("folder-read-only-outdir", "OUTDIR exists with mode 555, run as an ordinary user",
         with_tiny(steps(photos("in/a.png", "in/b.png"), mkdir("out", 0o555))), ("apply", "in", "out", *FOLDER),
         Fails(2, "cannot write into out: the folder is read-only or not yours"), runner="unprivileged"),
    Case("folder-kill-9", "`kill -9` during `apply DIR OUTDIR` (6 photos, 0.5 s each), then the same command again",
         with_tiny(photos(*KILLED_PHOTOS)), ("apply", "in", "out", "--batch-size", "1", *FOLDER),
         Succeeds(tuple(name.replace("in/", "out/") for name in KILLED_PHOTOS),
                  images_of((32, 24), *(name.replace("in/", "out/") for name in KILLED_PHOTOS)),
                  "after the kill only whole images; the rerun skips them and writes the rest", note="skipped"),
         runner="kill-9",
         interrupt=Interrupt(some_outputs_exist, killed_mid_batch, "once the first output exists",
                             seconds_per_image=0.5, leaves=(("out/.p5.png.{pid}-deadbeef.stylize-tmp", b"half an image"),))),
    Case("train-kill-9", f"`kill -9` during `train --resume auto` ({TRAIN_STEPS} tiny steps), then the same command again",
         training_inputs, (*TRAIN, "--iterations", str(TRAIN_STEPS), "--checkpoint-every", "2", "--resume", "auto"),
         Succeeds(("m.safetensors", "m.ckpt"), trained_to_the_end,
                  f"after the kill a whole checkpoint and no model; the rerun resumes and saves a {TRAIN_STEPS}-step model",
                  note="resumed from"),
         runner="kill-9", interrupt=Interrupt(lambda folder: (folder / "m.ckpt").exists(), killed_mid_training,
                                              "once the first checkpoint exists",
                                              leaves=((".m.ckpt.{pid}-0badc0de.stylize-tmp", b"half a checkpoint"),
                                                      (".m.safetensors.{pid}-deadbeef.stylize-tmp", b"half a model")))),
    Case("train-broken-style-image", "the style image is a truncated JPEG",
         steps(training_inputs, raw("cut.jpg", lambda: encoded(picture(64, 48), "JPEG")[:400])),
         ("train", "--style", "cut.jpg", *TRAIN[3:], "--iterations", "4"), Fails(2, "cannot read style image cut.jpg")),
]
