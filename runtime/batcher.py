"""Dynamic batching inside one process, aware of resolution: the Batcher.

    import mrdeploy.runtime as rt
    runner = rt.load("bundle/")                          # a bundle built with --batch 1-8
    with rt.Batcher(runner, max_batch=8) as batcher:
        future = batcher.submit(x)                       # from any thread; x as for runner.run
        y = future.result()                              # or y = batcher(x), blocking

Each request goes through the Runner's own dispatch (checks, profile choice, pad/resize) first. Requests
that land on the same profile with the same served shape (after padding: 100x100 and 110x110 both
padded to 128x128 join one batch) are stacked along the batch axis into one engine call, up to
``max_batch`` and the profile's batch max; each caller gets its own rows back, cropped or resized back
to its own size. A request is never held for a batch of another shape: every (profile, served shape)
group has its own queue. At most ``workers`` engine calls run at once (default: the CPU count, at
least 2); when all are busy, queued requests keep joining their batches, and the next free worker
takes the group whose oldest request has waited longest.

When a request finds the Batcher idle (no batch running), it runs at once: one client alone sees no
added delay. While every worker is busy, requests queue per group and join their batches; a free worker
takes the next group at once unless ``max_delay_ms`` asks it to wait (at most that long, or until the
batch is full) for more requests to join. The default, 0, never leaves a worker idle while requests
wait (as Triton's ``max_queue_delay_microseconds``, 0 by default): on EfficientNet-Lite1 with mixed sizes
(benchmarks/bench_batcher.py, docs/BENCHMARKS.md section 5) it gave 0.92-0.93x the plain Runner at 4
clients against 0.84x with 2 ms (fp32; int8 0.79-0.82x against 0.63-0.64x) and the same at 16 clients.

Errors go to the caller whose input caused them: a bad input fails its own future at ``submit``;
when a stacked engine call fails, its requests are run one by one so that only the faulty one fails.

The Batcher does not own the Runner: ``close()`` serves what is queued, stops the threads, and leaves
the runner open.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mrdeploy.errors import InputError, MrdeployError
from mrdeploy.runtime.dispatch import Decision
from mrdeploy.runtime.runner import Runner


@dataclass
class _Request:
    decision: Decision
    feeds: dict[str, np.ndarray]  # fitted to the served shape
    batch: int
    future: Future
    arrived: float


@dataclass
class _Group:
    """The queue of one (profile, served shape) key."""

    limit: int  # largest stacked batch this group may run
    pending: list[_Request] = field(default_factory=list)
    running: int = 0  # batches of this group in flight

    @property
    def queued(self) -> int:
        return sum(r.batch for r in self.pending)


class Batcher:
    """Stack concurrent requests of the same profile and served shape into one engine call."""

    def __init__(
        self,
        runner: Runner,
        max_batch: int = 8,
        max_delay_ms: float = 0.0,
        workers: int | None = None,
        policy: str | None = None,
    ):
        if not isinstance(runner, Runner):
            raise InputError(f"Batcher needs a mrdeploy.runtime.Runner, got {type(runner).__name__}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be an integer of at least 1, got {max_batch!r}")
        if not max_delay_ms >= 0:  # also refuses NaN
            raise InputError(f"max_delay_ms must be >= 0, got {max_delay_ms!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers must be an integer of at least 1, got {workers!r}")
        batch_max = {p.name: min(r.max[0] for r in p.inputs.values()) for p in runner.profiles}
        if max_batch > 1 and max(batch_max.values()) < 2:
            ranges = ", ".join(f"{n}: batch up to {b}" for n, b in batch_max.items())
            raise InputError(
                f"max_batch {max_batch} needs a bundle with batch ranges, but every profile of "
                f"{runner.bundle_dir} serves batch 1 only ({ranges}); rebuild it with "
                "`mrdeploy build-engine ... --batch 1-8@1`, or use max_batch=1"
            )
        self.runner = runner
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1e3
        self.policy = policy
        self._limits = {n: max(1, min(max_batch, b)) for n, b in batch_max.items()}
        self._groups: dict[tuple, _Group] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0  # batches in flight, all groups
        self.batch_sizes: Counter[int] = Counter()  # stacked batch size -> engine calls
        self.workers = workers or max(2, min(8, os.cpu_count() or 2))
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mrdeploy-batch")
        self._scheduler = threading.Thread(target=self._schedule, name="mrdeploy-batcher", daemon=True)
        self._scheduler.start()

    # --- the public calls -------------------------------------------------------------------------

    def submit(self, inputs) -> Future:
        """Queue one request (an array, or a dict for several inputs, as ``Runner.run`` takes it); the
        Future's result is the dict {output name: array} that ``runner.run(inputs)`` would return."""
        return self._submit(inputs, inline=False)

    def __call__(self, inputs, timeout: float | None = None):
        """Blocking: the output array when the model has one output, else the dict of outputs."""
        outs = self.run(inputs, timeout)
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def run(self, inputs, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Blocking: the dict {output name: array}, as ``Runner.run``. A request that finds its group
        idle runs in the calling thread (no hand-over to a worker)."""
        return self._submit(inputs, inline=True).result(timeout)

    def _submit(self, inputs, inline: bool) -> Future:
        future: Future = Future()
        try:
            arrays = self.runner._check_inputs(inputs)
            decision = self.runner._decide({n: a.shape for n, a in arrays.items()}, self.policy or self.runner.policy)
            feeds = self.runner._fit(arrays, decision)
        except MrdeployError as e:
            future.set_exception(e)
            return future
        batch = next(iter(feeds.values())).shape[0]
        name = decision.profile.name
        key = (name, tuple((n, s[1:]) for n, s in decision.served_shapes.items()))
        request = _Request(decision, feeds, batch, future, time.perf_counter())
        with self._cond:
            if self._closed:
                raise MrdeployError("the Batcher is closed")
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(self._limits[name])
            if inline and self._running == 0 and not group.pending:
                group.running += 1  # the Batcher is idle: nothing to wait for, run it here, now
                self._running += 1
            else:
                group.pending.append(request)
                self._cond.notify_all()  # the scheduler learns the new deadline (or a full batch)
                return future
        self._run_batch(group, [request])
        return future

    def close(self) -> None:
        """Serve what is queued, then stop the threads. Later ``submit`` calls raise. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._scheduler.join()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Batcher({self.runner!r}, max_batch={self.max_batch}, max_delay_ms={self.max_delay * 1e3:g})"

    # --- scheduling -------------------------------------------------------------------------------

    def _take(self, group: _Group) -> list[_Request]:
        """Pop the longest prefix of the group's queue that fits its limit (at least one request)."""
        taken, total = [], 0
        while group.pending and (not taken or total + group.pending[0].batch <= group.limit):
            r = group.pending.pop(0)
            taken.append(r)
            total += r.batch
        return taken

    def _ready(self, now: float) -> tuple[list[tuple[_Group, list[_Request]]], float | None]:
        """Batches to start now (at most one per free worker, oldest request first), and when to look
        again (None: at the next submit or finished batch)."""
        start = []
        while self._running < self.workers:
            best = None
            for group in self._groups.values():
                if group.pending and (
                    self._closed or self._running == 0 or group.queued >= group.limit
                    or group.pending[0].arrived + self.max_delay <= now
                ) and (best is None or group.pending[0].arrived < best.pending[0].arrived):
                    best = group
            if best is None:
                break
            start.append((best, self._take(best)))
            best.running += 1
            self._running += 1
        wake = None
        if self._running < self.workers:  # a worker is free: wake at the next deadline
            deadlines = [g.pending[0].arrived + self.max_delay for g in self._groups.values() if g.pending]
            wake = min(deadlines, default=None)
        idle = [k for k, g in self._groups.items() if not g.pending and g.running == 0]
        for key in idle:  # a stream of many sizes must not grow the table without end
            del self._groups[key]
        return start, wake

    def _schedule(self) -> None:
        while True:
            with self._cond:
                start, wake = self._ready(time.perf_counter())
                if not start:
                    if self._closed and not any(g.pending for g in self._groups.values()):
                        return
                    timeout = None if wake is None else max(0.0, wake - time.perf_counter())
                    self._cond.wait(timeout)
                    continue
            for group, requests in start:
                self._pool.submit(self._run_batch, group, requests)

    def _finished(self, group: _Group) -> None:
        with self._cond:
            group.running -= 1
            self._running -= 1
            self._cond.notify_all()

    # --- running ----------------------------------------------------------------------------------

    def _run_batch(self, group: _Group, requests: list[_Request]) -> None:
        try:
            live = [r for r in requests if r.future.set_running_or_notify_cancel()]
            if len(live) == 1:
                self._run_one(live[0])
            elif live:
                try:
                    outs = self._engine(live[0].decision.profile.name, [r.feeds for r in live])
                    parts = self._split(outs, [r.batch for r in live])
                except Exception:  # find whose input fails: run them one by one
                    for r in live:
                        self._run_one(r)
                else:
                    for r, part in zip(live, parts):
                        self._deliver(r, part)
        finally:
            self._finished(group)

    def _engine(self, name: str, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        stacked = feeds[0] if len(feeds) == 1 else {
            n: np.concatenate([f[n] for f in feeds], axis=0) for n in feeds[0]
        }
        total = next(iter(stacked.values())).shape[0]
        outs = self.runner._run_fitted(name, stacked)[0]  # each request was checked and fitted at submit
        with self._cond:
            self.batch_sizes[total] += 1
        return outs

    @staticmethod
    def _split(outs: dict[str, np.ndarray], batches: list[int]) -> list[dict[str, np.ndarray]]:
        total = sum(batches)
        for n, y in outs.items():
            if y.ndim == 0 or y.shape[0] != total:
                raise MrdeployError(
                    f"output {n!r} has shape {y.shape}, expected the stacked batch {total} first: "
                    "it cannot be split per request"
                )
        offsets = np.cumsum([0, *batches])
        return [{n: y[a:b] for n, y in outs.items()} for a, b in zip(offsets[:-1], offsets[1:])]

    def _deliver(self, r: _Request, outs: dict[str, np.ndarray]) -> None:
        try:
            result = self.runner._restore(outs, r.decision)
            result = {n: np.ascontiguousarray(y) for n, y in result.items()}
        except BaseException as e:
            r.future.set_exception(e)
        else:
            r.future.set_result(result)

    def _run_one(self, r: _Request) -> None:
        try:
            outs = self._engine(r.decision.profile.name, [r.feeds])
        except BaseException as e:
            r.future.set_exception(e)
        else:
            self._deliver(r, outs)
