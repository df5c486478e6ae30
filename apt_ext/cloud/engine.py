"""The serving engine: one worker thread that batches concurrent requests on the model's device.

Requests wait in a queue; whenever the model is free the worker takes the oldest request and
up to ``max_batch - 1`` more with the same decoding rule (greedy, or sampling with the same
temperature/top_p) and runs them as one batch (:meth:`LocalModel.run_batch`). A request that
arrives while a batch runs waits for the next one (no joining mid-batch). ``submit`` refuses a
request (:class:`EngineFull`) when ``max_batch + max_queue`` requests are already in flight.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable

import torch

from apt_ext.cloud.local_model import GenerationRequest, LocalModel


class EngineFull(RuntimeError):
    """Raised by :meth:`BatchEngine.submit` when the queue is full (the server answers 429)."""


Done = Callable[[BaseException | None], None]


class BatchEngine:
    """Batches requests for one :class:`LocalModel` in a background thread."""

    def __init__(self, model: LocalModel, max_batch: int = 8, max_queue: int = 32,
                 batch_wait_s: float = 0.005) -> None:
        if not isinstance(model, LocalModel):
            raise TypeError(f"model: expected a LocalModel, got {type(model).__name__}")
        for name, v, lo in (("max_batch", max_batch, 1), ("max_queue", max_queue, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        if not 0 <= batch_wait_s <= 1:
            raise ValueError(f"batch_wait_s: expected seconds in [0, 1], got {batch_wait_s!r}")
        self.model, self.max_batch, self.max_queue, self.batch_wait_s = model, max_batch, max_queue, batch_wait_s
        self._cv = threading.Condition()
        self._pending: deque[tuple[GenerationRequest, Done]] = deque()
        self._running = 0
        self._closed = False
        self._counts = {"requests": 0, "rejected": 0, "batches": 0, "max_batch_seen": 0,
                        "completion_tokens": 0, "failed_batches": 0}
        self._generator = torch.Generator(device=model.device).manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        self._thread = threading.Thread(target=self._loop, name="apt-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, req: GenerationRequest, on_done: Done) -> None:
        """Queue ``req``; ``on_done(error_or_None)`` is called from the worker thread when it ends."""
        with self._cv:
            if self._closed:
                raise RuntimeError("engine: closed")
            if len(self._pending) + self._running >= self.max_batch + self.max_queue:
                self._counts["rejected"] += 1
                raise EngineFull(f"{len(self._pending) + self._running} requests in flight "
                                 f"(max_batch {self.max_batch} + max_queue {self.max_queue})")
            self._counts["requests"] += 1
            self._pending.append((req, on_done))
            self._cv.notify()

    def stats(self) -> dict:
        with self._cv:
            return dict(self._counts, active=self._running, queued=len(self._pending),
                        max_batch=self.max_batch, max_queue=self.max_queue)

    def close(self) -> None:
        """Stop after the running batch; queued requests end with an error."""
        with self._cv:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._cv.notify_all()
        for _, done in dropped:
            done(RuntimeError("server shutting down"))
        self._thread.join(timeout=30)

    def _take(self) -> list[tuple[GenerationRequest, Done]]:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if self._closed:
                return []
            if len(self._pending) < self.max_batch and self.batch_wait_s:
                self._cv.wait(self.batch_wait_s)   # let requests sent together arrive together
            key = self._pending[0][0].sampling_key
            batch, rest = [], deque()
            while self._pending:
                item = self._pending.popleft()
                (batch if len(batch) < self.max_batch and item[0].sampling_key == key else rest).append(item)
            self._pending = rest
            self._running = len(batch)
            self._counts["batches"] += 1
            self._counts["max_batch_seen"] = max(self._counts["max_batch_seen"], len(batch))
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            live = [(r, d) for r, d in batch if not r.cancelled]
            error: BaseException | None = None
            try:
                self.model.run_batch([r for r, _ in live], generator=self._generator)
            except Exception as exc:  # reported to every request of the batch; the engine goes on
                error = exc
            with self._cv:
                self._running = 0
                self._counts["completion_tokens"] += sum(r.completion_tokens for r, _ in live)
                self._counts["failed_batches"] += error is not None
            for _, done in batch:
                done(error)
