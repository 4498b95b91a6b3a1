"""Layer models exported once for every device of a build, by one thread that owns the cache.

Every device of a build measures the whole plan, so the same key is wanted by every worker:
`SharedExports` exports it once (in the `ModelCache`'s worker processes), in the order the
workers ask, one batch ahead of each worker, and every device gets the same file.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
from pathlib import Path
from collections.abc import Sequence

from lut_db.layer_key import LayerConfig

from .export import ModelCache


class ExportFailed(Exception):
    """An export the worker waited for failed in the export thread (the cause is chained)."""


class SharedExports:
    """Layer models on disk, exported once per key by one thread that owns the cache.

    `request(cfgs, prefetch)` blocks until every model of `cfgs` is on disk and returns
    their paths; `prefetch` (the caller's next batch) is exported when nothing urgent waits.
    Urgent requests go first, in arrival order; keys already exported or in flight are not
    queued again. `host_cpu`, when given, is held for each export chunk (a local benchmark
    holds it too, so the two never share the host's cores).
    """

    def __init__(self, cache: ModelCache, host_cpu: threading.Lock | None = None, ready: dict[str, Path] | None = None):
        self.cache = cache
        self._host_cpu = host_cpu
        self._cond = threading.Condition()
        self._ready: dict[str, Path] = dict(ready or {})  # key -> model file on disk
        self._failed: dict[str, BaseException] = {}
        self._current: set[str] = set()  # being exported now
        self._queued: tuple[set[str], set[str]] = (set(), set())  # urgent, prefetch
        self._heap: list[tuple[int, int, list[LayerConfig]]] = []  # (priority, order, chunk)
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lutbuild-export", daemon=True)
        self._thread.start()

    def request(self, cfgs: Sequence[LayerConfig], prefetch: Sequence[LayerConfig] = ()) -> list[Path]:
        with self._cond:
            self._enqueue(cfgs, 0)
            self._enqueue(prefetch, 1)
            while True:
                failed = next((self._failed[c.key] for c in cfgs if c.key in self._failed), None)
                if failed is not None:
                    raise ExportFailed(f"export failed: {failed}") from failed
                if all(c.key in self._ready for c in cfgs):
                    break
                if self._closed:
                    raise ExportFailed("the export thread was stopped")
                self._cond.wait()
            return [self._ready[c.key] for c in cfgs]

    def close(self, wait: bool = True) -> None:
        """Stop the export thread (after the chunk in flight when `wait`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            self._thread.join()

    def _enqueue(self, cfgs: Sequence[LayerConfig], priority: int) -> None:
        skip = self._ready.keys() | self._failed.keys() | self._current | self._queued[0]
        if priority:
            skip |= self._queued[1]
        todo = [c for c in dict.fromkeys(cfgs) if c.key not in skip]
        if todo:
            self._queued[priority].update(c.key for c in todo)
            heapq.heappush(self._heap, (priority, next(self._order), todo))
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _, _, chunk = heapq.heappop(self._heap)
                chunk = [c for c in chunk if c.key not in self._ready and c.key not in self._failed
                         and c.key not in self._current]
                keys = {c.key for c in chunk}
                for queued in self._queued:
                    queued.difference_update(keys)
                self._current = keys
            if not chunk:
                continue
            failure, paths = None, []
            try:
                with self._host_cpu if self._host_cpu is not None else contextlib.nullcontext():
                    paths = self.cache.layers(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the workers waiting for it
                failure = exc
            with self._cond:
                if failure is None:
                    self._ready.update((c.key, Path(path)) for c, path in zip(chunk, paths))
                else:
                    self._failed.update((k, failure) for k in keys)
                self._current = set()
                self._cond.notify_all()
