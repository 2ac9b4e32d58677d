"""What every separator is: blocks of the mix in, one block per stem out (see :mod:`streamer.separation`)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

STEMS = ("speech", "music")


class Separator:
    name = "base"
    #: True when every stem is the input itself: the pipeline keeps one ring.
    identity = False
    latency_samples = 0

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def flush(self) -> dict[str, np.ndarray]:
        """Samples still held at end of stream (none for stateless separators)."""
        return {s: np.zeros(0, np.float32) for s in STEMS}

    def activity(self, stem: str, start: int, end: int, done: Optional[int] = None,
                 fed: Optional[int] = None) -> Optional[float]:
        """Presence (0..1) of ``stem`` in output samples ``[start, end)``, or None when this
        separator does not estimate it (the emotion model's activity head is used then).
        ``done``: the output samples handed out so far when it is asked (default ``end``), which a
        presence estimate running beside the stems with its own latency needs (see :class:`Beside`);
        ``fed``: the input samples it had received by then (default: all so far), for a window whose
        activity is asked later than it completed (a replay's batches)."""
        return None

    def close(self) -> None:
        pass


class Beside(Separator):
    """A separator with a presence estimate running beside it on the mix (``presence``: an object with
    ``process``, ``flush``, ``activity``, ``close`` and ``latency_samples``, e.g.
    :class:`streamer.presence.PresenceDetector` or the built-in separator with ``presence_only``):
    stems from ``separator``, ``activity`` from ``presence``.

    A window is complete once its stems are, ``separator.latency_samples`` after its end on the mix;
    the presence estimate needs ``presence.latency_samples`` after a point.  ``activity`` of
    ``[start, end)`` asked when ``done`` output samples are out (default ``end``) uses the presence up
    to ``done + separator latency - presence latency`` and no later than the presence computed from the
    ``fed`` input samples received by then (the separator hands out its stems up to its latency before
    that bound), so it adds no latency, and asked later (``fed`` given) it is what it was then."""

    def __init__(self, separator: Separator, presence):
        self.inner = separator
        self.presence = presence
        self.name = separator.name
        self.identity = separator.identity
        self.latency_samples = separator.latency_samples

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        self.presence.process(block)
        return self.inner.process(block)

    def flush(self) -> dict[str, np.ndarray]:
        self.presence.flush()
        return self.inner.flush()

    def activity(self, stem: str, start: int, end: int, done: Optional[int] = None,
                 fed: Optional[int] = None) -> Optional[float]:
        ready = (end if done is None else done) + self.inner.latency_samples - self.presence.latency_samples
        if fed is not None:  # steps centred up to fed - latency had been computed from fed samples
            ready = min(ready, fed - self.presence.latency_samples + 1)
        return self.presence.activity(stem, start, max(start + 1, min(end, ready)))

    def close(self) -> None:
        try:
            self.presence.close()
        finally:
            self.inner.close()


class Ahead:
    """The stems of a :class:`Beside`'s separator computed on a second thread, up to ``depth`` blocks
    ahead of the caller (a replay: the separator's work runs on the other core, beside the windows',
    features' and models' work).  :meth:`submit` blocks in stream order, :meth:`take` the oldest one's
    stems.  ``derive``: run on that thread with each block's stems (the windows' log-mel frames and
    K-weighted energies: :meth:`streamer.inputs.InputWindowStream.derive`).  The presence estimate
    sees each block as it is taken, or, with ``presence_on_thread`` and a ``thread_safe`` one, on
    that thread (the windows' activity is bounded by the samples fed when they completed:
    :meth:`Beside.activity`).  Stems, presence and messages are those of processing block by block
    (tested).  ``depth`` blocks or ``max_samples`` samples are submitted and not taken, at most."""

    def __init__(self, sep: Beside, depth: int = 8, max_samples: Optional[int] = None,
                 derive: Optional[Callable[[dict], None]] = None, presence_on_thread: bool = False):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.sep, self.depth = sep, int(depth)
        #: samples submitted and not taken, at most (:attr:`full`)
        self.max_samples = max_samples
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="emotrack-separator")
        self._queue: deque = deque()
        self._samples = 0
        #: True once the separator failed: the blocks after the one it failed on are not taken
        self.failed = False
        self._stopped = False     # on the thread: a block failed, the later ones are left alone
        self._presence_here = presence_on_thread and bool(getattr(sep.presence, "thread_safe", False))
        self._derive = derive

    def _separate(self, block: np.ndarray) -> Optional[dict[str, np.ndarray]]:
        if self._stopped:
            return None
        try:
            if self._presence_here:
                self.sep.presence.process(block)
            stems = self.sep.inner.process(block)
            if self._derive is not None:   # what the windows derive from the stems, on this thread too
                self._derive(stems)
            return stems
        except BaseException:
            self._stopped = True
            raise

    def submit(self, block: np.ndarray) -> None:
        self._queue.append((block, self._pool.submit(self._separate, block)))
        self._samples += int(block.size)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) > self.depth or (self.max_samples is not None and self._samples > self.max_samples)

    def take(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The oldest block submitted and its stems (waits for them); its error if the separator failed."""
        block, fut = self._queue.popleft()
        self._samples -= int(block.size)
        try:
            stems = fut.result()
        except BaseException:
            self.failed = True
            raise
        if not self._presence_here:
            self.sep.presence.process(block)
        return block, stems

    def close(self) -> None:
        """Stop the thread once the block it works on is done; blocks not taken are dropped."""
        for _, fut in self._queue:
            fut.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True)


class NoneSeparator(Separator):
    """No separation: both stems are the mix.

    ``presence``: a presence estimate run beside, on the same mix (``activity``):
    :class:`streamer.presence.PresenceDetector` by default in ``emotrack replay`` and
    ``stream`` (``--activity detector``; it reads the pipeline's log-mel frames of the
    mix), or the built-in separator's per-frame presence (``--activity separator``;
    its stems are discarded), so activity is the best presence estimate even when the
    emotion models read the mix.  Its latency adds nothing: a window's activity is the mean presence of
    its frames up to ``latency_samples`` before its end, the ones computed by
    the time the window is complete however the input was cut into blocks (so
    the activity does not depend on the block size, live or replayed)."""

    name = "none"
    identity = True

    def __init__(self, presence: Optional[Separator] = None):
        self.presence = presence

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        if self.presence is not None:
            self.presence.process(block)
        return {"speech": block, "music": block}

    def flush(self) -> dict[str, np.ndarray]:
        if self.presence is not None:
            self.presence.flush()
        return super().flush()

    def activity(self, stem: str, start: int, end: int, done: Optional[int] = None,
                 fed: Optional[int] = None) -> Optional[float]:
        if self.presence is None:
            return None
        ready = (end if done is None else done) - self.presence.latency_samples
        return self.presence.activity(stem, start, max(start + 1, min(end, ready)))

    def close(self) -> None:
        if self.presence is not None:
            self.presence.close()


def separate(x: np.ndarray, separator: Separator) -> dict[str, np.ndarray]:
    """Whole-signal separation with a streaming separator (one block, then flush; a separator
    with ``reset`` is reset first, so it can be reused for many signals)."""
    if hasattr(separator, "reset"):
        separator.reset()
    a = separator.process(np.asarray(x, np.float32))
    b = separator.flush()
    return {s: np.concatenate([a[s], b[s]]) for s in STEMS}
