"""A loop that can run in a thread of its own: the stream ingestors and the forwarders share it.

Each of them has a blocking `run(...)` that stops on its own stop flag; `BackgroundLoop` adds
the thread around it, keeps a failure in `error` instead of losing it with the thread, and
makes `stop()` ask the loop to finish (they commit what they hold first) and wait for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Mixin: call `_init_loop()` in `__init__`, `_start_thread(name, target)` in `start`."""

    error: BaseException | None
    _stop: threading.Event
    _thread: threading.Thread | None

    def _init_loop(self) -> None:
        self.error = None
        self._stop = threading.Event()
        self._thread = None

    def _start_thread(self, name: str, target: Callable[[], object]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:
                self.error = exc
                log.exception("%s failed", name)

        self._stop.clear()
        self._thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end (it finishes what it holds first) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


__all__ = ["BackgroundLoop"]
