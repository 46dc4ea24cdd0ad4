#!/usr/bin/env python3
"""``stylize serve``: a warm request against the Python API, and a load run with concurrent clients.

(a) **Warm request** (``--only ratio``): one 1024x768 JPEG posted to ``POST /v1/stylize`` of a ``stylize serve``
    process on a loopback port (a keep-alive connection, the multipart body built per request, the whole answer read),
    against ``Stylizer.apply_file`` on the same photo in this process, warm, writing a JPEG; the two alternate for
    ``--rounds`` rounds after warm-up and the medians are compared: the request must take at most 1.3x. Both run the
    bundled default model with ``compile=never`` (the server's default); the server is idle while the API runs and
    the other way round. For comparison, ``stylize apply`` on the same photo in a fresh process (median of 3).
(b) **Load run** (``--only load``): ``--clients`` threads, each with its own connection, post photos one after the
    other for ``--seconds`` seconds (the sun80 photos scaled to ``--load-side`` pixels on the long side, as the studio
    page's previews, cycling styles), each answer read whole. Targets: every request answered 200, none lost; the
    server's memory flat once the load's working set is built (peak RSS in the last quarter of the run at most
    100 MB above the second quarter's).
    Reports p50/p95 latency, throughput, the server's peak RSS (VmHWM) and how many photos shared a batch.

Prints a table per part and exits 1 when a target is missed. Photos: ``--photos DIR`` (default: the shared sun80
folder next to the checkout)::

    python scripts/bench/bench_serve.py                                  # both parts
    python scripts/bench/bench_serve.py --only load --clients 8 --seconds 60
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.runtime import prepare_process  # noqa: E402

prepare_process()  # before torch is imported, as the CLI and the README's Python example do

from PIL import Image  # noqa: E402

DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "content" / "sun80"
RATIO_TARGET = 1.3
GROWTH_TARGET_MB = 100.0


# ------------------------------------------------------------------------------------------------------ the server


class Server:
    """``python -m stylize serve --port 0 --model multistyle26`` in a subprocess, until stopped with Ctrl-C (SIGINT)."""

    def __init__(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stylize", "serve", "--port", "0", "--model", "multistyle26", *extra],
            stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        for line in self.process.stderr:
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if match:
                self.port = int(match.group(1))
                return
        sys.exit(f"the server did not start (exit {self.process.wait()})")

    def memory_mb(self, field: str = "VmRSS") -> float:
        """The server's ``VmRSS`` (now) or ``VmHWM`` (peak) in MB, from /proc."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} for the server")

    def stop(self) -> int:
        self.process.send_signal(2)  # SIGINT, as Ctrl-C
        return self.process.wait(60)


class Client:
    """One keep-alive HTTP connection that posts a photo as multipart/form-data."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def stylize(self, photo: bytes, name: str, **fields: str) -> tuple[int, bytes]:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode())
        body = b"".join(parts) + photo + f"\r\n--{boundary}--\r\n".encode()
        self.connection.request("POST", "/v1/stylize", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        answer = self.connection.getresponse()
        return answer.status, answer.read()


# ------------------------------------------------------------------------------------------------------- (a) ratio


def measure_ratio(photo: Path, rounds: int) -> tuple[list[str], bool]:
    from stylize.api import Stylizer

    data = photo.read_bytes()
    stylizer = Stylizer.load(compile="never")
    server = Server()
    client = Client(server.port)
    request_times, api_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.jpg"
        for index in range(rounds + 3):  # 3 warm-up rounds, not counted
            started = time.perf_counter()
            status, answer = client.stylize(data, photo.name)
            request = time.perf_counter() - started
            if status != 200 or Image.open(io.BytesIO(answer)).size != (1024, 768):
                sys.exit(f"the server answered {status}: {answer[:300]!r}")
            started = time.perf_counter()
            stylizer.apply_file(photo, out, overwrite=True)
            api = time.perf_counter() - started
            if index >= 3:
                request_times.append(request)
                api_times.append(api)
        fresh = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stylize", "apply", str(photo), str(out), "--overwrite"], check=True, capture_output=True, cwd=ROOT)
            fresh.append(time.perf_counter() - started)
    server.stop()
    request, api = statistics.median(request_times), statistics.median(api_times)
    ratio = request / api
    rows = [
        f"photo: {photo.name} (1024x768 JPEG, {len(data) / 1e3:.0f} kB), {rounds} interleaved rounds, medians",
        "",
        "| what | median | ratio to the API |",
        "|---|---:|---:|",
        f"| `Stylizer.apply_file`, warm process | {api * 1000:.0f} ms | 1.00 |",
        f"| `POST /v1/stylize` over loopback, warm server | {request * 1000:.0f} ms | {ratio:.2f} (target <= {RATIO_TARGET}) |",
        f"| `stylize apply` in a fresh process | {statistics.median(fresh) * 1000:.0f} ms | {statistics.median(fresh) / api:.2f} |",
    ]
    return rows, ratio <= RATIO_TARGET


# -------------------------------------------------------------------------------------------------------- (b) load


def load_photos(folder: Path, side: int) -> list[tuple[str, bytes]]:
    photos = []
    for path in sorted(folder.glob("*.jpg"))[:24]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=92)
        photos.append((path.name, buffer.getvalue()))
    return photos


def measure_load(photos: list[tuple[str, bytes]], clients: int, seconds: float) -> tuple[list[str], bool]:
    server = Server("--max-pending", str(max(16, 2 * clients)))
    Client(server.port).stylize(photos[0][1], photos[0][0])  # warm-up
    rss_start = server.memory_mb()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sent = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    samples: list[tuple[float, float]] = []

    def client_loop(number: int) -> None:
        client = Client(server.port)
        index = number
        while time.monotonic() < deadline:
            name, data = photos[index % len(photos)]
            with lock:
                sent[0] += 1
            started = time.perf_counter()
            try:
                status, _ = client.stylize(data, name, style=str(index % 26))
                outcome = str(status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"lost ({type(exc).__name__})"
                client = Client(server.port)
            with lock:
                latencies.append(time.perf_counter() - started)
                statuses[outcome] = statuses.get(outcome, 0) + 1
            index += clients

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        samples.append((time.monotonic() - started, server.memory_mb()))
        time.sleep(0.25)
    wall = time.monotonic() - started
    peak = server.memory_mb("VmHWM")
    health = Client(server.port)
    health.connection.request("GET", "/v1/health")
    runs = json.loads(health.connection.getresponse().read())["models"]["multistyle26"]
    exit_code = server.stop()
    quarter = max(1, len(samples) // 4)
    peaks = [max((m for _, m in samples[i * quarter : (i + 1) * quarter]), default=0.0) for i in range(4)]
    first, last = peaks[1], peaks[3]  # the working set of the load builds up in the first quarter; then it must stay
    answered = statuses.get("200", 0)
    ok = answered == sent[0] == len(latencies) and exit_code == 0 and last - first <= GROWTH_TARGET_MB
    cuts = statistics.quantiles(latencies, n=20)
    rows = [
        f"{clients} clients for {seconds:g} s, {len(photos)} photos scaled to a long side of {max(Image.open(io.BytesIO(photos[0][1])).size)} px",
        "",
        "| requests sent | answered 200 | other answers or lost | p50 | p95 | throughput | photos per batch | server RSS after warm-up "
        "| peak RSS (VmHWM) | peak RSS by quarter of the run | growth, 2nd to 4th quarter |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {sent[0]} | {answered} | {json.dumps({k: v for k, v in statuses.items() if k != '200'}) if answered != len(latencies) else 'none'} | "
        f"{statistics.median(latencies) * 1000:.0f} ms | {cuts[18] * 1000:.0f} ms | {answered / wall:.2f} requests/s | "
        f"{runs['photos'] / max(runs['batches'], 1):.2f} | "
        f"{rss_start:.0f} MB | {peak:.0f} MB | {', '.join(f'{p:.0f}' for p in peaks)} MB | {last - first:+.0f} MB (target <= {GROWTH_TARGET_MB:g}) |",
    ]
    return rows, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of photos (1024x768 JPEGs among them)")
    parser.add_argument("--only", choices=("ratio", "load"), help="run one part")
    parser.add_argument("--rounds", type=int, default=15, help="(a) timed rounds after 3 warm-up rounds")
    parser.add_argument("--clients", type=int, default=8, help="(b) concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="(b) length of the load run")
    parser.add_argument("--load-side", type=int, default=720, help="(b) long side of the photos posted")
    args = parser.parse_args()
    ok = True
    if args.only in (None, "ratio"):
        photo = next((p for p in sorted(args.photos.glob("*.jpg")) if Image.open(p).size == (1024, 768)), None)
        if photo is None:
            sys.exit(f"no 1024x768 JPEG in {args.photos}")
        rows, met = measure_ratio(photo, args.rounds)
        print("\n".join(["## warm request against the API", "", *rows, ""]))
        ok &= met
    if args.only in (None, "load"):
        rows, met = measure_load(load_photos(args.photos, args.load_side), args.clients, args.seconds)
        print("\n".join(["## load run", "", *rows, ""]))
        ok &= met
    print("all targets met" if ok else "MISS: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
