"""Cross-channel batching: one inference engine serves several streams.

Two flavours share :class:`BatchedInference` (one :class:`~engines.runtime.LoadedModel`
per source, any :class:`~engines.backends.Backend`: ONNX Runtime, TensorRT):

- :func:`run_batched` drives several replays in lock-step rounds in ONE thread:
  each round reads one block from every stream still going, windows it and
  computes features (each stream keeps its own separator, WindowStream and
  frame cache), queues the windows per model and runs a batch whenever
  ``max_batch`` windows are queued and at the end of the round.  Results are
  published in order per stream, from that one thread (ZeroMQ sockets are not
  thread-safe).  A stream that fails ends with its own ``end`` status (reason
  ``error: ...``); the others go on.
- :class:`BatchWorker` is the live flavour: a worker thread that gathers the
  windows submitted from any thread until ``max_batch`` are waiting or
  ``latency_budget_ms`` have passed since the first one, runs them and
  completes a :class:`concurrent.futures.Future` per window.  :func:`run_live`
  uses it for several live channels: one reader thread per channel, and all
  publishing from the calling thread, in order per channel.

Per-stream messages are exactly those of a single-stream run (same windows,
same seq per stream and topic); only the batch composition, hence float
rounding in the last digits, differs.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import EmotrackError, ParameterError
from .inputs import stack_inputs
from .pipeline import Pipeline, RunStats
from .sources import SAMPLE_RATE, Source
from .window import Window


class StreamPublisher:
    """A view of a shared Publisher for one stream: its name, its seq, its counters."""

    def __init__(self, pub, stream: str):
        self.pub, self.stream = pub, stream
        self.counters = {"published": 0, "pub_dropped": 0}

    def _counted(self, fn, *args, **fields) -> dict:
        before = dict(self.pub.counters)
        body = fn(*args, stream=self.stream, **fields)
        for k in self.counters:
            self.counters[k] += self.pub.counters.get(k, 0) - before.get(k, 0)
        return body

    def emotion(self, source: str, **fields) -> dict:
        return self._counted(self.pub.emotion, source, **fields)

    def status(self, event: str, **fields) -> dict:
        return self._counted(self.pub.status, event, **fields)


class BatchedInference:
    """Runs queued windows of any number of streams in batches of at most ``max_batch``.

    ``batches`` records every batch run as ``(source, size, n_streams)``.
    """

    def __init__(self, models: dict, max_batch: int = 16):
        if int(max_batch) < 1:
            raise ParameterError(f"--max-batch {max_batch} must be >= 1")
        self.models = models
        # a backend with a fixed largest batch (a TensorRT profile) caps it
        self.max_batch = {s: max(1, min(int(max_batch), int(getattr(m.backend, "max_batch", None) or max_batch)))
                          for s, m in models.items()}
        self.batches: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()

    def predict(self, source: str, feats: list[dict], streams: Optional[list] = None) -> list[dict]:
        """Outputs of ``feats`` (the inputs of one window each, by name:
        :meth:`streamer.window.WindowStream.inputs`) for ``source``, run in batches of at
        most max_batch; one {quadrant, va, activity} row-dict each."""
        model = self.models[source]
        cap = self.max_batch[source]
        outs: list[dict] = []
        for i in range(0, len(feats), cap):
            chunk = feats[i:i + cap]
            out = model.predict(stack_inputs(chunk))
            with self._lock:
                self.batches.append((source, len(chunk),
                                     len({id(s) for s in streams[i:i + cap]}) if streams else 1))
            outs.extend({k: v[j:j + 1] for k, v in out.items()} for j in range(len(chunk)))
        return outs


# --------------------------------------------------------------------------- replay


@dataclass
class _Stream:
    name: str
    source: Source
    pipe: Pipeline
    blocks: object = None
    t0: float = 0.0
    next_beat: float = 0.0
    done: bool = False
    error: Optional[BaseException] = None
    produced: bool = False  # windows this round (hop latency of live sources)


@dataclass
class StreamResult:
    name: str
    stats: RunStats
    error: Optional[BaseException] = None


class _Queue:
    """Windows waiting for their model, per source, in arrival order."""

    def __init__(self, engine: BatchedInference):
        self.engine = engine
        self.items: dict[str, list[tuple[_Stream, Window, np.ndarray]]] = {s: [] for s in engine.models}

    def add(self, st: _Stream, wins: list[Window]) -> None:
        for w in wins:  # features now: the windows are views valid until the next push
            q = self.items[w.key]
            q.append((st, Window(w.key, w.start, w.end, None), st.pipe.inputs(w)))
            if len(q) >= self.engine.max_batch[w.key]:
                self.run(w.key)

    def run(self, source: Optional[str] = None) -> None:
        for src in ([source] if source else list(self.items)):
            items, self.items[src] = self.items[src], []
            if not items:
                continue
            outs = self.engine.predict(src, [f for _, _, f in items], [st for st, _, _ in items])
            for (st, w, _), out in zip(items, outs):
                st.pipe.publish(src, w, out, 0)


def _finish(st: _Stream, q: _Queue, reason: Optional[str] = None) -> None:
    """Tail windows, everything queued, then this stream's end status."""
    if st.done:
        return
    st.done = True
    if reason:
        st.pipe.stats.reason = reason
    try:
        tail = st.pipe.sep.flush()
        if not st.pipe.sep.identity and tail["speech"].size:
            for wins in st.pipe.windows.push(tail):
                q.add(st, wins)
        rest = st.pipe.windows.flush()
        if rest:
            q.add(st, rest)
        q.run()
    finally:
        st.pipe.publish_end(st.source, st.t0)


def run_batched(streams: list[tuple[str, Source, Pipeline]], engine: BatchedInference,
                stop: Optional[threading.Event] = None) -> list[StreamResult]:
    """Replay several streams in one thread, batching their windows (see module doc).

    ``streams``: (name, source, pipeline) with each pipeline publishing through
    its own :class:`StreamPublisher`.  Returns one result per stream; a stream's
    error is in its result, never raised.
    """
    sts = [_Stream(n, s, p) for n, s, p in streams]
    q = _Queue(engine)
    for st in sts:
        st.t0 = time.monotonic()
        st.next_beat = st.t0 + st.pipe.heartbeat_s
        st.pipe.publish_start(st.source)
        st.blocks = iter(st.source.blocks())
    try:
        while any(not st.done for st in sts):
            for st in sts:
                if st.done:
                    continue
                st.produced = False
                try:
                    block = next(st.blocks)
                    for wins in st.pipe.windows.push(st.pipe._stems(block)):
                        q.add(st, wins)
                        st.produced = True
                except StopIteration:
                    _finish(st, q)
                except EmotrackError as exc:
                    st.error = exc
                    _finish(st, q, f"error: {exc}")
            q.run()
            now = time.monotonic()
            for st in sts:
                if st.done:
                    continue
                if st.produced and st.source.live and st.source.last_arrival is not None:
                    st.pipe.stats.hop_latency_ms.append((now - st.source.last_arrival) * 1000.0)
                if now >= st.next_beat:
                    st.pipe.pub.status("heartbeat", counters=st.pipe.counters(st.source))
                    st.next_beat = now + st.pipe.heartbeat_s
            if stop is not None and stop.is_set():
                break
    except KeyboardInterrupt:
        pass
    finally:
        # interrupted (or an unexpected error): what was captured is still published
        for st in sts:
            if not st.done:
                _finish(st, q, "interrupted")
    return [StreamResult(st.name, st.pipe.stats, st.error) for st in sts]


# --------------------------------------------------------------------------- live


class BatchWorker:
    """The latency-budget flavour: a worker thread batching windows submitted from any thread.

    A gather starts with the first window submitted and ends when ``max_batch``
    windows of one model are waiting or ``latency_budget_ms`` after that first
    one; then each model's waiting windows run (at most max_batch per batch) and
    their futures complete with the row-dict of outputs (or the exception).
    """

    def __init__(self, engine: BatchedInference, latency_budget_ms: float = 20.0):
        if latency_budget_ms < 0:
            raise ParameterError(f"latency budget {latency_budget_ms} ms must be >= 0")
        self.engine = engine
        self.budget_s = latency_budget_ms / 1000.0
        self._q: queue.Queue = queue.Queue()
        #: per gather: (time from the first submission to the run, {source: size})
        self.gathers: list[tuple[float, dict]] = []
        self._thread = threading.Thread(target=self._loop, name="emotrack-batch", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, source: str, feats: dict, tag=None,
               callback: Optional[Callable[[Future], None]] = None) -> Future:
        if self._closed:
            raise RuntimeError("BatchWorker is closed")
        fut: Future = Future()
        if callback is not None:
            fut.add_done_callback(callback)
        self._q.put((source, feats, tag, fut, time.monotonic()))
        return fut

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            first = item[4]
            pending: dict[str, list] = {s: [] for s in self.engine.models}
            pending[item[0]].append(item)
            deadline = first + self.budget_s
            stop = False
            while all(len(v) < self.engine.max_batch[s] for s, v in pending.items()):
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    nxt = self._q.get(timeout=wait)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                pending[nxt[0]].append(nxt)
            self.gathers.append((time.monotonic() - first, {s: len(v) for s, v in pending.items() if v}))
            for src, items in pending.items():
                if not items:
                    continue
                try:
                    outs = self.engine.predict(src, [it[1] for it in items], [it[2] for it in items])
                except BaseException as exc:  # handed to whoever waits on the futures
                    for it in items:
                        it[3].set_exception(exc)
                    continue
                for it, out in zip(items, outs):
                    it[3].set_result(out)
            if stop:
                return

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._thread.join(timeout=10.0)


_END = object()


def run_live(streams: list[tuple[str, Source, Pipeline]], worker: BatchWorker,
             stop: Optional[threading.Event] = None) -> list[StreamResult]:
    """Several live channels, one batching worker, publishing from this thread.

    One reader thread per channel reads its blocks, windows them, computes
    features and submits them to ``worker``; it hands (window, future) pairs to
    this thread through one queue, in order, so this thread publishes each
    channel's results in order and owns every socket.
    """
    sts = [_Stream(n, s, p) for n, s, p in streams]
    out: queue.Queue = queue.Queue()

    def read(st: _Stream) -> None:
        pipe = st.pipe

        def submit(wins):
            for w in wins:
                fut = worker.submit(w.key, pipe.inputs(w), st)
                out.put((st, Window(w.key, w.start, w.end, None), fut, st.source.last_arrival))
        try:
            for block in st.source.blocks():
                for wins in pipe.windows.push(pipe._stems(block)):
                    submit(wins)
                if stop is not None and stop.is_set():
                    pipe.stats.reason = "interrupted"
                    break
        except EmotrackError as exc:
            st.error = exc
            pipe.stats.reason = f"error: {exc}"
        except BaseException as exc:  # noqa: BLE001 - reported as this channel's end
            st.error = exc
            pipe.stats.reason = f"error: {type(exc).__name__}: {exc}"
        finally:
            try:
                tail = pipe.sep.flush()
                if not pipe.sep.identity and tail["speech"].size:
                    for wins in pipe.windows.push(tail):
                        submit(wins)
                submit(pipe.windows.flush())
            finally:
                out.put((st, _END, None, None))

    for st in sts:
        st.t0 = time.monotonic()
        st.next_beat = st.t0 + st.pipe.heartbeat_s
        st.pipe.publish_start(st.source)
    threads = [threading.Thread(target=read, args=(st,), name=f"emotrack-read-{st.name}", daemon=True)
               for st in sts]
    for th in threads:
        th.start()
    remaining = len(sts)
    while remaining:
        try:
            st, w, fut, arrival = out.get(timeout=0.2)
        except queue.Empty:
            st = None
        if st is not None:
            if w is _END:
                st.done = True
                remaining -= 1
                st.pipe.publish_end(st.source, st.t0)
            else:
                try:
                    st.pipe.publish(w.key, w, fut.result(), 0)
                except Exception as exc:  # noqa: BLE001 - inference failed for this window
                    if st.error is None:
                        st.error = exc
                        st.pipe.stats.reason = f"error: {exc}"
                    continue
                if st.source.live and arrival is not None:
                    st.pipe.stats.hop_latency_ms.append((time.monotonic() - arrival) * 1000.0)
        now = time.monotonic()
        for s2 in sts:
            if not s2.done and now >= s2.next_beat:
                s2.pipe.pub.status("heartbeat", counters=s2.pipe.counters(s2.source))
                s2.next_beat = now + s2.pipe.heartbeat_s
    for th in threads:
        th.join(timeout=5.0)
    return [StreamResult(st.name, st.pipe.stats, st.error) for st in sts]


__all__ = ["BatchedInference", "BatchWorker", "StreamPublisher", "StreamResult", "run_batched", "run_live"]
