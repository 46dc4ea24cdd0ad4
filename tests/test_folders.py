"""Folder conversion (``stylize apply DIR OUTDIR``): the real CLI in subprocesses, and the batching logic in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylize.config import FolderOptions
from stylize.errors import StylizeError
from stylize.pipeline.folder_plan import Job, plan
from stylize.pipeline.folder_run import DecodedFile, group_batches
from stylize.pipeline.stages import Photo
from tests.conftest import REPO, make_photo, run_cli

FAST = ("--workers", "0")  # tiny images: worker start-up would cost more than it saves


def fully_decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """Nested folders with mixed sizes and formats, one non-image and one empty file."""
    root = tmp_path / "in"
    make_photo(root / "a.jpg", (48, 40))
    make_photo(root / "b.png", (40, 32))
    make_photo(root / "m_bad.jpg", (8, 8)).write_bytes(b"this is not an image")
    make_photo(root / "sub" / "c.png", (48, 40), "RGBA")
    make_photo(root / "sub" / "deep" / "d.webp", (64, 30))
    make_photo(root / "sub" / "deep" / "e.jpg", (48, 40), "L")
    (root / "sub" / "z_empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not picked up")
    return root


EXPECTED = {"a.jpg", "b.png", "sub/c.png", "sub/deep/d.webp", "sub/deep/e.jpg"}


def outputs(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_nested_mixed_folder_bad_files_report_and_rerun(tmp_path, tree):
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = run_cli("apply", str(tree), str(out), "--report", str(report), "--batch-size", "2", *FAST)
    assert result.returncode == 1, result.stderr  # two files failed, the rest were done
    assert outputs(out) == EXPECTED
    for name in EXPECTED:
        source, target = Image.open(tree / name), Image.open(out / name)
        assert target.size == source.size and target.format == source.format
    assert Image.open(out / "sub/c.png").mode == "RGBA"  # alpha re-attached
    data = json.loads(report.read_text())
    by_input = {Path(r["input"]).relative_to(tree).as_posix(): r for r in data["files"]}
    assert set(by_input) == EXPECTED | {"m_bad.jpg", "sub/z_empty.png"}
    assert by_input["m_bad.jpg"]["status"] == "failed" and "not an image" in by_input["m_bad.jpg"]["reason"]
    assert "empty" in by_input["sub/z_empty.png"]["reason"]
    assert all(by_input[n]["status"] == "done" and by_input[n]["seconds"] > 0 for n in EXPECTED)
    assert by_input["a.jpg"]["output"] == str(out / "a.jpg")
    assert data["summary"]["done"] == 5 and data["summary"]["failed"] == 2
    assert "failed" in result.stdout.decode() and "m_bad.jpg" in result.stdout.decode()  # the Rich table lists them

    before = {name: (out / name).stat().st_mtime_ns for name in EXPECTED}
    rerun = run_cli("apply", str(tree), str(out), "--json", *FAST)
    summary = json.loads(rerun.stdout)
    assert rerun.returncode == 1
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 5, 2)
    assert {Path(f["input"]).name for f in summary["failures"]} == {"m_bad.jpg", "z_empty.png"}
    assert before == {name: (out / name).stat().st_mtime_ns for name in EXPECTED}

    again = run_cli("apply", str(tree), str(out), "--overwrite", "--json", "--no-recursive", "--ext", "jpg,png", *FAST)
    summary = json.loads(again.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 1)
    assert (out / "a.jpg").stat().st_mtime_ns > before["a.jpg"]


def test_suffix_format_and_colliding_output_names(tmp_path):
    root = tmp_path / "in"
    make_photo(root / "x.jpg")
    make_photo(root / "x.png")
    make_photo(root / "y.bmp", (30, 24))
    out = tmp_path / "out"
    result = run_cli("apply", str(root), str(out), "--suffix", "_s", "--format", "webp", "--style", "3", "--json", *FAST)
    summary = json.loads(result.stdout)
    assert result.returncode == 1 and summary["style"] == "3"
    assert outputs(out) == {"x_s.webp", "y_s.webp"}
    assert [Path(f["input"]).name for f in summary["failures"]] == ["x.png"]  # x.jpg came first and got x_s.webp
    assert "same output name" in summary["failures"][0]["reason"]

    good = run_cli("apply", str(root), str(tmp_path / "out2"), "--ext", "bmp", "--json", *FAST)
    assert good.returncode == 0 and json.loads(good.stdout)["done"] == 1


@pytest.fixture(scope="module")
def stylizer():
    from stylize.api import Stylizer

    return Stylizer.load(device="cpu")


def run_in_process(stylizer, source: Path, target: Path, **options):
    return stylizer.apply_folder(source, target, workers=0, **options)


def test_outdir_equal_to_dir_needs_distinct_names_and_ignores_previous_outputs(tmp_path, stylizer):
    root = tmp_path / "in"
    make_photo(root / "x.png")
    with pytest.raises(StylizeError, match="would replace its input"):
        run_in_process(stylizer, root, root)
    summaries = [run_in_process(stylizer, root, root, suffix="_s") for _ in range(2)]
    assert outputs(root) == {"x.png", "x_s.png"}  # the second run did not take x_s.png for an input
    assert (summaries[0].done, summaries[1].skipped, len(summaries[1].records)) == (1, 1, 1)


def test_outdir_inside_dir_is_not_read_back(tmp_path, stylizer):
    root = tmp_path / "in"
    make_photo(root / "x.png")
    for _ in range(2):
        summary = run_in_process(stylizer, root, root / "styled")
        assert len(summary.records) == 1 and summary.failed == 0
    assert outputs(root) == {"x.png", "styled/x.png"}


def test_output_escaping_through_a_symlink_is_refused(tmp_path, stylizer):
    root = tmp_path / "in"
    make_photo(root / "sub" / "x.png")
    make_photo(root / "y.png")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a loop: discovery must not hang
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    summary = run_in_process(stylizer, root, out)
    assert (summary.done, summary.failed, summary.exit_code) == (1, 1, 1)
    assert "leaves OUTDIR" in summary.failures[0].reason
    assert list(outside.iterdir()) == []


def test_killed_run_leaves_no_partial_outputs_and_rerun_completes(tmp_path):
    root = tmp_path / "in"
    names = [f"p{i}.png" for i in range(40)]
    for name in names:
        make_photo(root / name, (384, 320))  # about 40 ms each: the run is still going when it is killed
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "stylize", "apply", str(root), str(out), "--batch-size", "1", "--workers", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len([p for p in out.glob("p*.png")]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (out / ".p7.png.deadbeef.stylize-tmp").write_bytes(b"half a file")  # as a kill during a write leaves it
    finals = [p for p in out.glob("*.png")]
    assert 2 <= len(finals) < len(names)
    assert all(fully_decodes(p) for p in finals)

    result = run_cli("apply", str(root), str(out), "--json", *FAST)
    summary = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert summary["skipped"] == len(finals) and summary["done"] == len(names) - len(finals)
    assert outputs(out) == set(names)  # every image, and no temporary file left
    assert all(fully_decodes(out / name) for name in names)


def test_torchrun_two_processes_do_each_file_once(tmp_path):
    root = tmp_path / "in"
    names = {f"p{i}.jpg" for i in range(6)} | {"sub/q.png"}
    for name in names:
        make_photo(root / name, (40, 32))
    out, report = tmp_path / "out", tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "stylize", "apply", str(root), str(out), "--json", "--report", str(report), "--workers", "0",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, timeout=240)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summaries = [json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")]
    assert len(summaries) == 1, "only rank 0 prints"
    assert summaries[0]["world_size"] == 2 and summaries[0]["done"] == len(names)
    files = json.loads(report.read_text())["files"]
    assert sorted(Path(f["input"]).relative_to(root).as_posix() for f in files) == sorted(names)
    assert outputs(out) == names


def test_folder_only_options_are_refused_for_one_file(tmp_path):
    photo = make_photo(tmp_path / "x.png")
    result = run_cli("apply", str(photo), str(tmp_path / "y.png"), "--suffix", "_s")
    assert result.returncode == 2 and b"only apply to folders" in result.stderr


# ---------------------------------------------------------------------------------------------- in-process units


def decoded(index: int, size: tuple[int, int]) -> DecodedFile:
    job = Job(index, Path(f"{index}.png"), Path(f"out/{index}.png"), "PNG")
    return DecodedFile(job, Photo(torch.zeros(3, *size, dtype=torch.uint8), None, "RGB", None, None))


def test_batches_group_equal_padded_sizes_and_large_images_go_alone():
    items = [decoded(0, (32, 40)), decoded(1, (30, 38)), decoded(2, (64, 64)), decoded(3, (32, 40)), decoded(4, (500, 500))]
    failed = DecodedFile(Job(5, Path("5.png"), Path("o/5.png"), "PNG"), error="broken")
    batches = list(group_batches(iter([*items, failed]), batch_size=3, max_batch_pixels=100_000, buffer_size=8))
    as_ids = sorted(sorted(item.job.index for item in batch) for batch in batches)
    assert as_ids == [[0, 1, 3], [2], [4], [5]]  # 30x38 pads to 32x40; 500x500 exceeds the pixel budget


def test_plan_refuses_dir_inside_outdir_when_an_output_would_be_an_input(tmp_path):
    make_photo(tmp_path / "photos" / "x.png")
    make_photo(tmp_path / "photos" / "photos" / "x.png")  # its output would be photos/x.png, an input
    with pytest.raises(StylizeError, match="DIR lies inside OUTDIR"):
        plan(tmp_path / "photos", tmp_path, FolderOptions())
    assert len(plan(tmp_path / "photos", tmp_path, FolderOptions(suffix="_s"))) == 2


def test_plan_refuses_a_bad_suffix_and_format(tmp_path):
    make_photo(tmp_path / "in" / "x.png")
    with pytest.raises(StylizeError, match="separator"):
        FolderOptions(suffix="a/b")
    with pytest.raises(StylizeError, match="format"):
        plan(tmp_path / "in", tmp_path / "out", FolderOptions(format="gif"))


def test_a_padded_batch_gives_each_image_what_it_gives_alone(tmp_path):
    from stylize.api import Stylizer
    from stylize.pipeline import stages as pipeline

    stylizer = Stylizer.load(device="cpu", precision="fp32")
    weights = stylizer.style_weights("5")
    torch.manual_seed(1)
    pixels = [torch.randint(0, 256, (3, 30, 37), dtype=torch.uint8), torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8)]
    together = pipeline.stylize(stylizer.engine, pixels, weights, FolderOptions())
    for image, result in zip(pixels, together, strict=True):
        alone = stylizer.apply(image.float().div(255).unsqueeze(0), style="5")[0]
        assert result.shape == alone.shape
        assert torch.allclose(result, alone, atol=1e-5)


def test_folder_mode_streams_in_tiles_with_the_same_result(tmp_path):
    """--tile N in folder mode goes through the exact streamed path: same pixels as the whole-image pass (to rounding)."""
    import numpy as np

    src = tmp_path / "in"
    make_photo(src / "a.png", (64, 48))
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    assert run_cli("apply", str(src), str(whole), "--tile", "off", "--workers", "0").returncode == 0
    result = run_cli("apply", str(src), str(tiled), "--tile", "32", "--workers", "0")
    assert result.returncode == 0, result.stderr
    a = np.asarray(Image.open(whole / "a.png"), dtype=np.int16)
    b = np.asarray(Image.open(tiled / "a.png"), dtype=np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1
    bad = run_cli("apply", str(src), str(tmp_path / "bad"), "--tile", "banana")
    assert bad.returncode == 2 and "tile" in bad.stderr.decode()


def test_helper_threads_yield_to_the_network():
    """The decoding and writing threads lower only their own priority, relative to the current one."""
    import os
    import threading

    from stylize.pipeline.folder_run import HELPER_NICENESS, yield_to_network

    if not hasattr(os, "setpriority"):
        pytest.skip("no per-thread priorities on this platform")
    seen = {}

    def helper() -> None:
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        yield_to_network()
        seen["change"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - before
        seen["before"] = before

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=helper)
    thread.start()
    thread.join()
    assert seen["change"] == min(HELPER_NICENESS, 19 - seen["before"])
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before  # this thread is untouched


def test_a_file_another_run_writes_meanwhile_counts_as_skipped(tmp_path, stylizer, monkeypatch):
    """Two runs on the same folders: an output that appears between planning and writing is the other run's, not a
    failure of this one."""
    from stylize.pipeline import folder_run

    root = tmp_path / "in"
    make_photo(root / "a.png")
    make_photo(root / "b.png")
    out = tmp_path / "out"
    original = folder_run.stages.encode

    def other_run_first(image, photo, fmt, options):
        data = original(image, photo, fmt, options)
        target = out / "a.png"
        if not target.exists():
            target.write_bytes(data)  # what a concurrent stylize apply would have written
        return data

    monkeypatch.setattr(folder_run.stages, "encode", other_run_first)
    summary = run_in_process(stylizer, root, out)
    statuses = {Path(record.input).name: record.status for record in summary.records}
    assert statuses == {"a.png": "skipped", "b.png": "done"} and summary.exit_code == 0


def test_apply_folder_draws_a_tqdm_bar_when_asked(tmp_path, stylizer, capsys):
    root = tmp_path / "in"
    make_photo(root / "a.png")
    make_photo(root / "b.jpg")
    summary = stylizer.apply_folder(root, tmp_path / "out", progress=True, workers=0)
    assert summary.done == 2
    assert "2/2" in capsys.readouterr().err  # tqdm writes to stderr outside notebooks
