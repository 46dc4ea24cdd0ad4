"""Background threads joined to the caller by bounded queues: :class:`Producer` and :class:`Consumer`.

Decoding runs ahead of the processor in a :class:`Producer`; encoding follows it in a :class:`Consumer`. The queues
hold at most ``maxsize`` items, so memory stays flat whatever the clip's length, and FFmpeg releases the GIL while it
decodes, converts and encodes, so the threads overlap with the processor. An exception in a thread is raised again in
the caller, with its traceback, at the next call; either side can stop the other without leaving a thread blocked.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()
_POLL_SECONDS = 0.1


class Producer(Generic[T]):
    """Runs ``make()``'s iterator in a thread, at most ``maxsize`` items ahead; iterate over the producer to get them."""

    def __init__(self, make: Callable[[], Iterator[T]], maxsize: int, name: str) -> None:
        self._queue: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        while True:
            item, error = self._queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the thread if it is still running, and wait for it (its iterator is closed, releasing its files)."""
        self._stop.set()
        self._thread.join()

    def _run(self, make: Callable[[], Iterator[T]]) -> None:
        iterator = None
        try:
            iterator = make()
            for item in iterator:
                if not self._offer((item, None)):
                    return
        except BaseException as exc:  # handed to the caller, which raises it
            self._offer((_END, exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._offer((_END, None))

    def _offer(self, entry: tuple[object, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False


class Consumer(Generic[T]):
    """Calls ``handle(item)`` in a thread for each item :meth:`put`, holding at most ``maxsize`` items."""

    def __init__(self, handle: Callable[[T], None], maxsize: int, name: str) -> None:
        self._handle = handle
        self._queue: queue.Queue[object] = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        """Queue ``item``, waiting while the queue is full; raises the thread's exception if it has failed."""
        self._put(item)

    def finish(self) -> None:
        """Wait until every queued item is handled; raises the thread's exception if it failed."""
        self._put(_END)
        self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Stop without handling the queued items, and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def _put(self, item: object) -> None:
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("the consumer thread has stopped")
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                self._handle(item)  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the caller, which raises it
            self._error = exc
