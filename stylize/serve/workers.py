"""One worker thread per model: requests queue up, and those that can share a batch go through the network together.

A :class:`ModelWorker` owns a :class:`~stylize.api.Stylizer`; nothing else runs its engine. Request handlers decode
and encode in their own threads and hand the worker photos (:meth:`ModelWorker.stylize`) or whole tasks such as a
sheet (:meth:`ModelWorker.call`). Each time the worker is free it takes everything that is waiting and runs the photos
in batches of equal padded size and equal settings (the folder run's rule and pixel budget,
:func:`stylize.pipeline.folder_run.batch_limit`), each photo with its own style weights; nothing waits for company,
so a lone request starts at once. A failure fails only the requests it belongs to. (How many requests may wait at
all is bounded before their bodies are read: :class:`stylize.serve.app.Guard`.)

:class:`Models` loads models by the names ``stylize models`` lists (never by a client's path), once each.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from stylize.api import Stylizer
from stylize.config import ApplyOptions, ServeOptions
from stylize.errors import StylizeError
from stylize.io import DEFAULT_MODEL, list_models, verify_file
from stylize.network import padded_size
from stylize.pipeline import StyleWeights, stylize
from stylize.pipeline.folder_run import batch_limit
from stylize.serve.problems import Problem


@dataclass
class _Photo:
    """A decoded photo waiting for the network."""

    pixels: torch.Tensor  # (3, H, W) uint8
    weights: StyleWeights
    options: ApplyOptions
    future: Future = field(default_factory=Future)

    @property
    def batch_key(self) -> tuple:
        """Photos with equal keys may share a batch: same padded size, same settings for the whole batch."""
        o = self.options
        return (padded_size(self.pixels.shape[1], self.pixels.shape[2]), o.work_size, o.preserve_color, o.strength, o.tile, o.memory_limit)


@dataclass
class _Task:
    """Any other work on the model (a sheet): run alone, in order."""

    function: Callable[[], Any]
    future: Future = field(default_factory=Future)


class ModelWorker:
    """The thread that runs one model's network, and the queue in front of it."""

    def __init__(self, stylizer: Stylizer, batch_size: int | None = None) -> None:
        self.stylizer = stylizer
        self.batch_size = batch_size
        self.batches_run = 0  # forward batches so far, and the photos in them: how much batching happens
        self.photos_run = 0
        self._queue: deque[_Photo | _Task] = deque()
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"stylize-serve-{stylizer.name}", daemon=True)
        self._thread.start()

    def stylize(self, pixels: torch.Tensor, weights: StyleWeights, options: ApplyOptions) -> Future:
        """Queue one ``(3, H, W)`` uint8 photo; the future gives its ``(3, H, W)`` float result (as ``pipeline.stylize``)."""
        return self._put(_Photo(pixels, weights, options))

    def call(self, function: Callable[[], Any]) -> Future:
        """Queue ``function()`` to run on this worker's thread, alone; the future gives its result."""
        return self._put(_Task(function))

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _put(self, item: _Photo | _Task) -> Future:
        with self._changed:
            if self._closed:
                raise Problem(503, "the server is stopping", "try again once it has restarted")
            self._queue.append(item)
            self._changed.notify()
        return item.future

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if not self._queue:
                    return
                waiting = list(self._queue)
                self._queue.clear()
            for group in self._groups(waiting):
                self._run_group(group)

    def _groups(self, waiting: list[_Photo | _Task]) -> list[list[_Photo | _Task]]:
        """Tasks alone; photos in batches of equal keys (in the order their first member arrived), capped by the budget."""
        groups: list[list[_Photo | _Task]] = []
        open_groups: dict[tuple, list[_Photo | _Task]] = {}
        for item in waiting:
            if isinstance(item, _Task):
                groups.append([item])
                continue
            key = item.batch_key
            group = open_groups.get(key)
            if group is None or len(group) >= batch_limit(key[0], self.stylizer.engine.device, self.batch_size):
                group = open_groups[key] = []
                groups.append(group)
            group.append(item)
        return groups

    def _run_group(self, group: list[_Photo | _Task]) -> None:
        first = group[0]
        if isinstance(first, _Task):
            _settle(first.future, first.function)
            return
        rows, photos = [], []
        for photo in group:  # a style that depends on the photo (a weakened painting) is evaluated per photo
            try:
                rows.append(photo.weights([photo.pixels]) if callable(photo.weights) else photo.weights[None])
                photos.append(photo)
            except Exception as exc:  # noqa: BLE001 - fails this request alone
                photo.future.set_exception(exc)
        if not photos:
            return
        table = torch.cat(rows)  # (B, S): each photo's own style weights

        def run() -> list[torch.Tensor]:
            return stylize(self.stylizer.engine, [p.pixels for p in photos], table, photos[0].options)

        results = Future()
        _settle(results, run)
        self.batches_run += 1
        self.photos_run += len(photos)
        if results.exception() is not None:
            for photo in photos:
                photo.future.set_exception(results.exception())
            return
        for photo, result in zip(photos, results.result(), strict=True):
            photo.future.set_result(result)


def _settle(future: Future, function: Callable[[], Any]) -> None:
    """Run ``function`` and put its result or its exception into ``future``: the worker itself never fails."""
    try:
        future.set_result(function())
    except Exception as exc:  # noqa: BLE001 - delivered to the request that asked
        future.set_exception(exc)


class Models:
    """The server's models by name, each loaded once with its own :class:`ModelWorker`."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self._workers: dict[str, ModelWorker] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def worker(self, name: str | None) -> ModelWorker:
        """The worker of model ``name`` (None: the default model), loading it on first use. Only names that
        ``stylize models`` lists are accepted; a client's path is never opened."""
        name = name or DEFAULT_MODEL
        with self._lock:
            worker = self._workers.get(name)
            if worker is not None:
                return worker
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # one load per model; requests for models already loaded do not wait for it
            with self._lock:
                worker = self._workers.get(name)
            if worker is None:
                worker = ModelWorker(self._load(name), self.options.batch_size)
                with self._lock:
                    self._workers[name] = worker
            return worker

    def loaded(self) -> list[str]:
        return list(self.workers())

    def workers(self) -> dict[str, ModelWorker]:
        with self._lock:
            return dict(self._workers)

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()

    def _load(self, name: str) -> Stylizer:
        entries = {entry.name: entry for entry in list_models()}
        entry = entries.get(name)
        if entry is None:
            raise StylizeError(f"unknown model: {name}", f"known models: {', '.join(entries) or 'none'}; see GET /v1/models")
        if entry.origin == "bundled":
            verify_file(entry.path, f"models/{entry.path.name}")
        stylizer = Stylizer.load(entry.path, device=self.options.device, precision=self.options.precision, compile=self.options.compile)
        if stylizer.takes_paintings:
            stylizer.embedder()  # loaded now, not by two request threads at once
        return stylizer
