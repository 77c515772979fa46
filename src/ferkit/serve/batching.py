"""Micro-batching: one worker thread owns the model; requests put decoded images on a queue, the worker takes
what arrived within ``max_wait_ms`` (up to ``max_batch`` images) and runs one ``Analyzer.process`` on them:
one ``detect_batch`` (same-sized images, e.g. webcam frames, share forwards) and one classifier forward for
all their face crops; it waits only while more requests are in progress than it holds (``pending``), so a
lone request is not delayed. ``max_batch=1`` turns batching off (one image per forward, still one worker)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np


class MicroBatcher:
    def __init__(
        self,
        process: Callable[..., list[Any]],
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, list[Any]], None] | None = None,
        max_queue: int = 256,
        pending: Callable[[], int] | None = None,
    ):
        self.process = process
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.on_batch = on_batch
        # How many requests are in progress (decoding or queued): the worker stops waiting once its batch holds
        # them all, so a lone request pays no batching delay.
        self.pending = pending
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="ferkit-microbatch", daemon=True)
        self._t.start()

    def submit(self, image: np.ndarray, source: str, attributes: tuple[str, ...] | None = None) -> Future:
        """A Future of the image's result list. ``attributes``: this image's per-face attributes when not the
        analyzer's own (a request's ``?attributes=``). Raises ``queue.Full`` when the server is saturated."""
        fut: Future = Future()
        self._q.put_nowait((image, source, fut, attributes))
        return fut

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                if self.pending is not None and self._q.empty() and len(batch) >= self.pending():
                    break
                left = deadline - time.perf_counter()
                try:
                    batch.append(self._q.get(timeout=left) if left > 0 else self._q.get_nowait())
                except queue.Empty:
                    break
            batch = [b for b in batch if b[2].set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                extra = {"attributes": [b[3] for b in batch]} if any(b[3] is not None for b in batch) else {}
                out = self.process([b[0] for b in batch], [b[1] for b in batch], **extra)
            except BaseException as e:  # noqa: BLE001 - the error belongs to these requests, the worker lives on
                for b in batch:
                    b[2].set_exception(e)
                continue
            if self.on_batch is not None:
                try:
                    self.on_batch(len(batch), out)
                except Exception:  # noqa: BLE001 - metrics must never break inference
                    pass
            for b, r in zip(batch, out, strict=True):
                b[2].set_result(r)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
