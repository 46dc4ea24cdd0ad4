"""The HTTP API (``stylize serve``) through FastAPI's test client, with the bundled models and small real images: what
it answers, that it equals the API's own results, how requests share batches, and every way a request can be wrong."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from stylize.api import Stylizer, model_records
from stylize.config import SERVER_OWNED_FIELDS, VIDEO_EXTENSIONS, ApplyOptions, ServeOptions
from stylize.io.resources import BUNDLED_STYLES_DIR
from stylize.serve import create_app
from stylize.serve.forms import apply_fields
from tests.conftest import REPO, invoke, make_photo
from tests.robustness_corpus import CASES, TINY, Fails, Succeeds

WAVE = BUNDLED_STYLES_DIR / "wave.jpg"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(ServeOptions(models=("multistyle26",), max_upload_bytes=1_500_000, max_pixels=100_000))) as test_client:
        yield test_client


@pytest.fixture()
def photo(tmp_path) -> Path:
    return make_photo(tmp_path / "photo.png", (72, 54))


def encoded(path: Path, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, fmt)
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def post(client, data: bytes, name: str = "photo.png", path: str = "/v1/stylize", paintings=(), **fields):
    files = [("image", (name, data, "application/octet-stream"))]
    files += [("style_image", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paintings]
    return client.post(path, files=files, data={k: str(v) for k, v in fields.items()})


def assert_problem(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    problem = response.json()
    assert fragment in problem["error"], problem
    assert problem["status"] == status and "\n" not in problem["error"] and "Traceback" not in response.text


# ------------------------------------------------------------------------------------------------------- answers


def test_models_are_the_records_of_stylize_models(client):
    answer = client.get("/v1/models").json()
    assert answer["models"] == model_records() and "multistyle26" in answer["loaded"]
    assert {m["name"] for m in answer["models"]} >= {"multistyle26", "arbitrary", "wave"}


def test_stylize_equals_apply_file(client, photo, tmp_path):
    """The same pixels as Stylizer.apply_file with the same settings, in the photo's own format (PNG here)."""
    response = post(client, photo.read_bytes(), style=7, strength=0.6, preserve_color="true")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-stylize-style"] == "7" and 'filename="photo_stylized.png"' in response.headers["content-disposition"]
    reference = tmp_path / "reference.png"
    Stylizer.load(compile="never").apply_file(photo, reference, style=7, strength=0.6, preserve_color=True)
    assert np.abs(pixels(response.content) - pixels(reference.read_bytes())).max() <= 1


@pytest.mark.parametrize("fmt,sent,expected", [("JPEG", None, "image/jpeg"), ("GIF", None, "image/png"), ("PNG", "webp", "image/webp")])
def test_answer_format_follows_the_photo_or_the_request(client, photo, fmt, sent, expected):
    fields = {"format": sent} if sent else {}
    response = post(client, encoded(photo, fmt), f"photo.{fmt.lower()}", **fields)
    assert response.status_code == 200 and response.headers["content-type"] == expected
    assert Image.open(io.BytesIO(response.content)).size == (72, 54)


def test_work_size_mix_and_max_size(client, photo):
    small = post(client, photo.read_bytes(), max_size=36, mix="3:0.5,12:0.5")
    assert small.status_code == 200 and Image.open(io.BytesIO(small.content)).size == (36, 27)
    painted = post(client, photo.read_bytes(), work_size=64, style=3)
    assert painted.status_code == 200 and Image.open(io.BytesIO(painted.content)).size == (72, 54)


def test_a_painting_upload_uses_the_arbitrary_model(client, photo, tmp_path):
    painting = tmp_path / "wave.jpg"
    Image.open(WAVE).resize((256, 171)).save(painting)
    full = post(client, photo.read_bytes(), paintings=[painting])
    half = post(client, photo.read_bytes(), paintings=[painting], strength=0.5)
    assert full.status_code == half.status_code == 200 and full.headers["x-stylize-model"] == "arbitrary"
    assert full.headers["x-stylize-style"] == "wave"
    original = pixels(photo.read_bytes())
    assert np.abs(pixels(half.content) - original).mean() < np.abs(pixels(full.content) - original).mean()


def test_sheet_answers_the_grid_and_its_tiles(client, photo):
    response = post(client, photo.read_bytes(), path="/v1/sheet", size=32, styles="0,19", columns=3)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    tiles = json.loads(response.headers["x-stylize-tiles"])
    assert [t["label"] for t in tiles] == ["photo", "0", "19"] and tiles[2]["box"][2:] == [32, 24]
    assert Image.open(io.BytesIO(response.content)).size[0] == 8 + 3 * 40


def test_schema_fields_come_from_apply_options(client):
    """Every ApplyOptions field a client may set is a documented form field of /v1/stylize; the server's own are not."""
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/stylize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    properties = schema["components"]["schemas"][body]["properties"]
    assert set(properties) == {"image", "style_image", "model", *apply_fields()}
    assert not (SERVER_OWNED_FIELDS - {"style_image"}) & set(properties)  # style_image: uploads, not paths
    assert properties["strength"]["default"] == ApplyOptions.strength and "0 returns the photo unchanged" in properties["strength"]["description"]
    sheet_body = schema["paths"]["/v1/sheet"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    assert {"size", "columns", "styles", "strength"} <= set(schema["components"]["schemas"][sheet_body]["properties"])


def test_the_page_is_one_file_that_works_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" in page.text and "<style>" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text


# -------------------------------------------------------------------------------------------------------- batching


def test_requests_waiting_together_share_one_batch(client, photo):
    """Four photos of one size queued while the worker is busy go through the engine as one batch, each in its own
    style, and each result equals the photo stylized alone."""
    worker = client.app.state.models.worker("multistyle26")
    stylizer = worker.stylizer
    release = threading.Event()
    blocker = worker.call(release.wait)
    photos = [torch.from_numpy(pixels(photo.read_bytes()).astype(np.uint8)).permute(2, 0, 1).contiguous() for _ in range(4)]
    batches_before, photos_before = worker.batches_run, worker.photos_run
    futures = [worker.stylize(p, stylizer.style_weights(style), ApplyOptions()) for p, style in zip(photos, (0, 5, 11, 19), strict=True)]
    release.set()
    results = [future.result(timeout=60) for future in futures]
    blocker.result(timeout=60)
    assert (worker.batches_run - batches_before, worker.photos_run - photos_before) == (1, 4)
    for result, style in zip(results, (0, 5, 11, 19), strict=True):
        alone = stylizer.apply(photos[0].float()[None] / 255, style=style)[0]
        assert (result - alone).abs().max() < 2 / 255


def test_concurrent_requests_are_all_answered(client, photo):
    data = photo.read_bytes()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda style: post(client, data, style=style), range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    assert len({a.content for a in answers}) == 12, "each style its own picture"


# ---------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "fields,status,fragment",
    [
        ({"style": 77}, 400, "style index 77 is out of range for model 'multistyle26'"),
        ({"style": "nope"}, 400, "unknown style 'nope'"),
        ({"strength": 2}, 400, "strength must be between 0 and 1, got 2.0"),
        ({"strength": "lots"}, 400, "bad strength: Input should be a valid number"),
        ({"format": "xyz"}, 400, "unknown output format 'xyz'"),
        ({"blend": "embedding"}, 400, "blend=embedding weakens a style predicted from a painting"),
        ({"model": "no_such_model"}, 400, "unknown model: no_such_model"),
        ({"model": "/etc/passwd"}, 400, "unknown model: /etc/passwd"),
        ({"model": "../models/wave"}, 400, "unknown model: ../models/wave"),
        ({"tile": "16"}, 200, ""),  # a server-owned field is not a form field: ignored, never obeyed
    ],
)
def test_bad_options_are_400_with_the_one_line_message(client, photo, fields, status, fragment):
    response = post(client, photo.read_bytes(), **fields)
    if status == 200:
        assert response.status_code == 200
        return
    assert_problem(response, status, fragment)


def test_missing_photo_and_unknown_paths(client):
    no_photo = client.post("/v1/stylize", data={"style": "3"})
    assert_problem(no_photo, 400, "no photo in the request (send it as a multipart/form-data part named image)")
    assert_problem(client.get("/v1/nothing"), 404, "Not Found")
    assert_problem(client.get("/v1/stylize"), 405, "Method Not Allowed")


def test_uploads_over_the_byte_limit_are_413_before_reading(client):
    big = b"\xff\xd8" + bytes(1_600_000)
    assert_problem(post(client, big, "big.jpg"), 413, "larger than this server's limit of 1.5 MB")

    def chunks():  # no Content-Length: the limit holds as the bytes arrive
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n\r\n"
        for _ in range(40):
            yield bytes(50_000)

    streamed = client.post("/v1/stylize", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_problem(streamed, 413, "larger than this server's limit")
    assert client.get("/v1/health").json()["status"] == "ok"


def test_images_over_the_pixel_limit_are_413_with_what_to_do(client, tmp_path):
    photo = make_photo(tmp_path / "large.png", (400, 300))  # 120,000 pixels over the fixture's 100,000
    response = post(client, photo.read_bytes(), "large.png")
    assert_problem(response, 413, "large.png is 400x300 (0.1 megapixels), more pixels than the limit of 0.1 megapixels")
    assert "send a smaller one" in response.json()["hint"] and "max_pixels" not in response.json()["error"]
    sheet = post(client, make_photo(tmp_path / "p.png", (40, 30)).read_bytes(), path="/v1/sheet", size=512)
    assert_problem(sheet, 413, "a sheet of 27 tiles of 512 pixels would be larger")
    painting = post(client, photo.read_bytes(), "large.png", paintings=[WAVE])  # paintings pass the same guard
    assert_problem(painting, 413, "painting wave.jpg is 512x284")


def test_a_failing_request_leaves_the_server_answering(client, photo, monkeypatch):
    engine = client.app.state.models.worker("multistyle26").stylizer.engine
    original = engine.forward
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a fault in the engine")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "forward", broken)
    assert_problem(post(client, photo.read_bytes()), 500, "unexpected RuntimeError: a fault in the engine")
    assert post(client, photo.read_bytes()).status_code == 200


def test_busy_server_answers_503(photo):
    with TestClient(create_app(ServeOptions(max_pending=1))) as busy:
        worker = busy.app.state.models.worker(None)
        release = threading.Event()
        worker.call(release.wait)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, busy, photo.read_bytes())
            while busy.app.middleware_stack is None or _pending(busy) < 1:
                threading.Event().wait(0.01)
            second = post(busy, photo.read_bytes())
            release.set()
            assert first.result(timeout=60).status_code == 200
        assert_problem(second, 503, "the server is busy")
        assert second.headers["retry-after"] == "1"


def _pending(test_client) -> int:
    layer = test_client.app.middleware_stack
    while layer is not None and not hasattr(layer, "pending"):
        layer = getattr(layer, "app", None)
    return layer.pending if layer is not None else 0


# ------------------------------------------------------------------------------------------ the robustness corpus


#: Corpus cases about file names and paths, which a client never gives the server: not sent.
ABOUT_PATHS = {
    "directory-named-jpg", "missing-input", "symlink-loop", "input-name-too-long", "name-too-long", "output-exists", "output-symlink",
    "output-dangling-symlink", "output-parent-is-file", "unknown-extension", "non-utf8-names", "long-names",
}  # fmt: skip
#: The corpus's one-photo cases (``stylize apply FILE OUT --model tiny``, perhaps ``--max-pixels 500``) on images,
#: sent as uploads; the corpus's own test runs them through the CLI.
IMAGE_CASES = [
    pytest.param(case, id=case.name)
    for case in CASES
    if case.runner == "cli" and case.args[:1] == ("apply",) and case.args[3:5] == ("--model", TINY)
    and case.args[5:] in ((), ("--max-pixels", "500")) and Path(case.args[1]).suffix.lstrip(".") not in VIDEO_EXTENSIONS
    and case.name not in ABOUT_PATHS
]  # fmt: skip


def test_corpus_selection_covers_the_hostile_images():
    names = {param.id for param in IMAGE_CASES}
    assert {"zero-byte", "text-as-jpg", "truncated-jpeg", "truncated-png", "png-bad-crc", "1x1", "bomb-header", "over-max-pixels"} <= names
    assert {"cmyk-jpeg", "16-bit-png", "rgba", "animated-gif", "exif-rotated"} <= names and len(names) >= 19


@pytest.fixture(scope="module")
def corpus_clients():
    """One server per pixel limit: the default, and 500 for the corpus's ``--max-pixels 500``."""
    opened: dict[int, TestClient] = {}

    def client_for(max_pixels: int) -> TestClient:
        if max_pixels not in opened:
            opened[max_pixels] = TestClient(create_app(ServeOptions(max_pixels=max_pixels))).__enter__()
        return opened[max_pixels]

    yield client_for
    for test_client in opened.values():
        test_client.__exit__(None, None, None)


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_robustness_corpus_over_http(case, tmp_path, corpus_clients):
    """Each hostile image is a 4xx with the CLI's message (or, where the CLI succeeds, a 200 with an image); the server
    answers afterwards. The server's pixel limit stands for the corpus's ``--max-pixels 500``."""
    case.build(tmp_path)
    source = case.args[1]
    one = corpus_clients(500 if "--max-pixels" in case.args else ServeOptions.max_pixels)
    response = post(one, (tmp_path / source).read_bytes(), source)
    if isinstance(case.expect, Fails):
        assert 400 <= response.status_code < 500
        fragment = case.expect.fragment.replace("raise the limit with --max-pixels", "more pixels than the limit")
        assert_problem(response, response.status_code, fragment)
    else:
        assert isinstance(case.expect, Succeeds)
        assert response.status_code == 200, response.text
        Image.open(io.BytesIO(response.content)).load()
    assert one.get("/v1/health").json()["status"] == "ok"


# ------------------------------------------------------------------------------------------------- the command line


def test_serve_without_the_extra_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the serve extra were not installed
    for module in ("stylize.serve.app", "stylize.serve.server", "stylize.serve.workers", "stylize.serve.forms"):
        monkeypatch.delitem(sys.modules, module, raising=False)  # imported afresh, as in a new process
    result = invoke("serve")
    assert result.returncode == 2
    assert result.stderr.decode() == "error: stylize serve needs the serve extra (missing: fastapi) (pip install 'stylize[serve]')\n"


def test_serve_process_warns_off_loopback_answers_and_stops_on_ctrl_c(tmp_path):
    """The real console entry: a warning for a non-loopback host, the URL once it listens, and Ctrl-C (SIGINT) stops
    it cleanly: exit 0, 'stopped', no traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("STYLIZE_DEBUG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "stylize", "serve", "--host", "0.0.0.0", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        lines = []
        while not any("Ctrl-C stops" in line for line in lines):
            line = process.stderr.readline()
            assert line, f"the server ended early: {''.join(lines)}"
            lines.append(line)
        assert lines[0].startswith("warning: listening on 0.0.0.0: other machines can reach this server")
        port = re.search(r"http://0\.0\.0\.0:(\d+)/", lines[-1]).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=30) as answer:
            assert json.load(answer)["status"] == "ok"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert err.strip().endswith("stopped") and "Traceback" not in err
