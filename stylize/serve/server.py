"""Running the application with uvicorn: in the foreground (``stylize serve``) or in a background thread (tests,
scripts, notebooks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from stylize.config import ServeOptions
from stylize.serve.app import create_app


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``on_ready(url)`` once it listens."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None] | None) -> None:
        super().__init__(config)
        self.on_ready = on_ready
        self.url: str | None = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            if self.on_ready is not None:
                self.on_ready(self.url)


def _server(options: ServeOptions, on_ready: Callable[[str], None] | None) -> _Server:
    config = uvicorn.Config(
        create_app(options), host=options.host, port=options.port, log_level="warning", access_log=False,
        lifespan="on", timeout_graceful_shutdown=10,
    )  # fmt: skip
    return _Server(config, on_ready)


def serve(options: ServeOptions, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until Ctrl-C (SIGINT) or SIGTERM: requests in flight finish, then the models' workers stop."""
    _server(options, on_ready).run()


@contextmanager
def running(options: ServeOptions | None = None, timeout: float = 120.0) -> Iterator[str]:
    """Serve in a background thread while the block runs; yields the base URL (``port=0``, the default here, takes a
    free port).

    >>> with running() as url:
    ...     requests.post(f"{url}/v1/stylize", files={"image": open("photo.jpg", "rb")})
    """
    server = _server(options or ServeOptions(port=0), None)
    thread = threading.Thread(target=server.run, name="stylize-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while server.url is None:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield server.url
    finally:
        server.should_exit = True
        thread.join(timeout)
