"""The streaming pipeline: source -> separation -> windows -> features ->
inference -> publish.

One loop, driven by the source's blocks.  Live sources put blocks in a bounded
queue from their own thread, so a slow step here shows up as counted drops, never
as a blocked capture; publishing never blocks (see :mod:`streamer.publish`).
Windows completed by one block are batched per model; a replay (``replay_batch``)
takes each window's inputs when it completes but runs a model once for 8 waiting
windows and asks their presence then, bounded by what had been computed when each
completed (same messages, same order: tested), a live stream every hop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from . import adapt, features as F, taxonomy, tracking
from .errors import EmotrackError, ModelError
from .inputs import InputWindowStream, check_input_versions, input_shape, stack_inputs
from .schema import QUADRANTS
from .separation import Ahead, Beside, Separator
from .sources import SAMPLE_RATE, Source
from .window import Window, WindowPlan

QUADRANT_INDEX = {q: i for i, q in enumerate(QUADRANTS)}
#: how far (samples of the mix) a replay's separator thread may run ahead of the windows
AHEAD_SAMPLES = 8 * SAMPLE_RATE


@dataclass(frozen=True)
class _Done:
    """Where a completed window lay (its samples are gone once the ring moves on)."""

    key: str
    start: int
    end: int
    fed: Optional[int] = None   # mix samples the separator had received (None: all, after its flush)


def check_model_features(model, params: F.FeatureParams = F.DEFAULT_PARAMS) -> None:
    """Refuse a model trained on other features than this streamer computes."""
    check_input_versions(model.card, model.id)
    card_params = model.card.get("features", {})
    if card_params != params.to_dict():
        diff = sorted(k for k in set(card_params) | set(params.to_dict())
                      if card_params.get(k) != params.to_dict().get(k))
        raise ModelError(f"model {model.id} was trained with other feature parameters ({', '.join(diff)}) "
                         "than this emotrack computes; retrain or use a matching emotrack version")
    if "musicnn" in model.input_names:
        from .musicnn import front_end_params

        got = model.card["inputs"]["musicnn"].get("front_end")
        if got != front_end_params():
            raise ModelError(f"model {model.id} was trained on musicnn embeddings of another front end "
                             f"(card inputs.musicnn.front_end {'missing' if got is None else 'differs'}); "
                             "retrain it or use a matching emotrack version")
    n = int(round(float(model.card["window_s"]) * params.sample_rate))
    for name in model.input_names:
        want = list(input_shape(name, n, params))
        got = list(model.card["inputs"][name]["shape"][1:])
        if got != want:
            raise ModelError(f"model {model.id}: window_s={model.card['window_s']} gives {name} of shape {want} "
                             f"but the model takes {got}")


def summarise(window_outputs: dict[str, np.ndarray], i: int) -> dict:
    """Message fields of window ``i`` of a batch of model outputs.

    Quadrant, probabilities and valence/arousal all follow from the model's quadrant
    probabilities by the one relation of :func:`streamer.taxonomy.agreeing` (per-axis
    probabilities P(V+) = p1 + p4, P(A+) = p1 + p2; valence = 2 P(V+) - 1, arousal = 2 P(A+) - 1;
    published probabilities their product), so they never contradict each other.  The model's
    own ``va`` output is not published (a model that has one trains it on the same signs)."""
    fields = taxonomy.agreeing(np.asarray(window_outputs["quadrant"][i], np.float64))
    fields["activity"] = float(np.clip(np.nan_to_num(window_outputs["activity"][i]), 0.0, 1.0))
    return fields


@dataclass
class RunStats:
    stream_seconds: float = 0.0
    wall_seconds: float = 0.0
    windows: dict = field(default_factory=lambda: {"speech": 0, "music": 0})
    hop_latency_ms: list = field(default_factory=list)
    reason: str = "end of input"
    warning: Optional[str] = None

    @property
    def realtime_factor(self) -> float:
        return self.stream_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def latency_percentiles(self) -> dict:
        if not self.hop_latency_ms:
            return {}
        lat = np.asarray(self.hop_latency_ms)
        return {f"p{p}": round(float(np.percentile(lat, p)), 2) for p in (50, 95, 99)}


class Pipeline:
    """Runs models over one source and publishes every window."""

    def __init__(self, models: dict, publisher, separator: Separator, *,
                 hops_s: Optional[dict] = None, heartbeat_s: float = 1.0,
                 block_max_s: float = 4.0, params: F.FeatureParams = F.DEFAULT_PARAMS,
                 progress: Optional[Callable[[float], None]] = None,
                 activity_from_separator: bool = True, smooth_s=None, replay_batch: int = 1):
        if not models:
            raise EmotrackError("no model to run")
        self.models = models
        self.pub = publisher
        self.sep = separator
        self.activity_from_separator = activity_from_separator
        #: windows per model per inference call when replaying (live sources: 1, every hop at once)
        self.replay_batch = max(1, int(replay_batch))
        self._pending: list = []
        self._fed: Optional[int] = 0   # mix samples given to the separator (None once it is flushed)
        self.params = params
        self.heartbeat_s = heartbeat_s
        self.progress = progress
        self.block_max = int(block_max_s * SAMPLE_RATE)
        specs = {}
        self.hops_s = {}
        # per-stream adaptation of the models whose card asks for it (streamer.adapt): one state per source
        self.adaptation = {src: a for src, m in models.items() if (a := adapt.from_card(m.card)) is not None}
        self.streams = {src: a.new_stream() for src, a in self.adaptation.items()}
        for src, m in models.items():
            check_model_features(m, params)
            plan = WindowPlan.from_card(m.card, (hops_s or {}).get(src), src)
            # One call before the stream starts: the runtime allocates its buffers
            # here, not inside the first live hop.
            m.predict({n: np.zeros((1, *input_shape(n, plan.length, params)), np.float32) for n in m.input_names})
            self.hops_s[src] = plan.hop_s
            stem = "mix" if separator.identity else src
            specs[src] = (stem, plan.length, plan.hop)
        # a replay may run the separator (and what the windows derive from its stems) ahead: see run
        self._can_run_ahead = isinstance(separator, Beside) and getattr(separator.inner, "runs_ahead", False)
        self.windows = InputWindowStream(specs, self.block_max, params,
                                         lead_samples=2 * AHEAD_SAMPLES if self._can_run_ahead else 0)
        # a presence detector beside the mix reads the mix's log-mel frames from the frame cache
        # (streamer.presence): each frame is computed once
        follow = getattr(getattr(separator, "presence", None), "follow", None)
        if separator.identity and follow is not None and "mix" in self.windows.mels:
            self.windows.frame_listeners.setdefault("mix", []).append(follow(self.windows.mels["mix"]))
        self.stats = RunStats()
        # -- tracking (streamer.tracking): a causal filter per source adds "tracked" to every message
        self.trackers = {} if not smooth_s else {
            src: tracking.make_tracker(src, tracking.smooth_for(smooth_s, src), window_s=float(m.card["window_s"]),
                                       hop_s=self.hops_s[src])
            for src, m in models.items()}

    def _stems(self, block: np.ndarray, stems: Optional[dict] = None) -> dict[str, np.ndarray]:
        """The stems of the next block of the mix (``stems``: computed already, by :class:`Ahead`)."""
        if self._fed is not None:
            self._fed += int(block.size)
        if stems is not None:
            return stems
        if self.sep.identity:
            self.sep.process(block)  # a separator running beside for its presence only sees the mix too
            return {"mix": block}
        return self.sep.process(block)

    def _process(self, wins: list[Window]) -> None:
        """Infer and publish ``wins`` now (per hop: live), or, with ``replay_batch`` > 1, take their
        inputs and presence now and defer inference until a model has that many windows waiting
        (:meth:`_drain`): fewer, larger runtime calls; the messages are the same, in the same order."""
        for w in wins:  # inputs now: the windows are views valid until the next write
            # activity (presence up to the window's end, however late it is asked) now when live,
            # when the batch runs in replay: the presence estimate then also runs many steps at once
            act = self._activity(w) if self.replay_batch == 1 else None
            self._pending.append((_Done(w.key, w.start, w.end, self._fed), self.inputs(w), act))
        counts: dict[str, int] = {}
        for w, _, _ in self._pending:
            counts[w.key] = counts.get(w.key, 0) + 1
        # the first windows go out at once: a replay's first message does not wait for a batch
        if max(counts.values(), default=0) >= self.replay_batch or not any(self.stats.windows.values()):
            self._drain()

    def _drain(self) -> None:
        """Infer every pending window (one call per model) and publish them in completion order."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        by_source: dict[str, list[int]] = {}
        for i, (w, _, _) in enumerate(pending):
            by_source.setdefault(w.key, []).append(i)
        outs, row = {}, {}
        for src, idx in by_source.items():
            outs[src] = self.models[src].predict(stack_inputs([pending[i][1] for i in idx]))
            row.update({i: r for r, i in enumerate(idx)})
        for i, (w, _, act) in enumerate(pending):
            self.publish(w.key, w, outs[w.key], row[i], act)  # act None: publish asks _activity(w)

    def inputs(self, w: Window) -> dict[str, np.ndarray]:
        """The inputs of window ``w`` that its model takes, adapted to the stream where its
        model adapts (:mod:`streamer.adapt`: windows are taken in stream order, and a window whose
        separator activity is below the card's gate does not update the statistics)."""
        x = self.windows.inputs(w, self.models[w.key].input_names)
        ad = self.adaptation.get(w.key)
        if ad is not None:
            act = None if self.sep.identity else self.sep.activity(w.key, w.start, w.end)
            x = self.streams[w.key].adapt_inputs(x, update=ad.wants_update(act))
        return x

    def _activity(self, w: Window) -> tuple[Optional[float], Optional[float]]:
        """The separator's presence over window ``w`` and over the hop at its centre (None, None
        without one), as it was when the window completed: asked then (live), or later in a replay's
        batch with the mix samples fed by then (``w.fed``), which bound the presence it reads."""
        act = presence = None
        if self.activity_from_separator:
            src, fed = w.key, getattr(w, "fed", None)
            act = self.sep.activity(src, w.start, w.end, fed=fed)
            if src in self.trackers:  # presence over the hop at the window's centre: 'tracked.present'
                c, h = (w.start + w.end) // 2, int(round(self.hops_s[src] * SAMPLE_RATE)) // 2
                presence = self.sep.activity(src, c - h, c + h, done=w.end, fed=fed)
        return act, presence

    def publish(self, src: str, w, out: dict[str, np.ndarray], i: int, activity=None) -> None:
        """Publish window ``w`` of source ``src`` from row ``i`` of a batch's outputs.

        ``activity`` comes from the separator's presence estimate where it has one (the
        presence detector beside the mix by default: :mod:`streamer.presence`; ``activity``:
        :meth:`_activity` when the window completed), else from the emotion model's activity head."""
        fields = summarise(out, i)
        act, presence = activity if activity is not None else self._activity(w)
        if act is not None:
            fields["activity"] = float(np.clip(act, 0.0, 1.0))
        if src in self.trackers:
            fields["tracked"] = self.trackers[src].update(
                valence=fields["valence"], arousal=fields["arousal"], probs=fields["probs"], activity=fields["activity"],
                t_end=w.end / SAMPLE_RATE, presence=presence).to_dict()
        self.pub.emotion(src, t_start=w.start / SAMPLE_RATE, t_end=w.end / SAMPLE_RATE,
                         model=self.models[src].id, **fields)
        self.stats.windows[src] += 1

    def counters(self, source: Source) -> dict:
        c = dict(source.counters)
        c.update(self.pub.counters)
        c["windows"] = dict(self.stats.windows)
        if self.streams:  # windows that updated a per-stream adaptation (the rest were below its activity gate)
            c["adapt_updates"] = {src: st.updates for src, st in self.streams.items()}
        c["stream_time"] = round(self.windows.total / SAMPLE_RATE, 3)
        return c

    def run(self, source: Source, stop: Optional[threading.Event] = None) -> RunStats:
        """Process ``source`` to its end (or until ``stop`` is set)."""
        st = self.stats
        t0 = time.monotonic()
        if source.live:
            self.replay_batch = 1
            # a live hop does not wait for the musicnn front end: each grid patch is embedded on a
            # worker as soon as it is written, about a second before the first window that reads it
            for src, m in self.models.items():
                if "musicnn" in m.input_names:
                    self.windows.patch_embeddings(self.windows.windowers[src][0]).eager()
        self._next_beat = t0 + self.heartbeat_s
        self.publish_start(source)
        error: Optional[BaseException] = None
        # a replay runs a separator beside a presence estimate on a second thread, blocks ahead, with
        # the presence and what the windows derive from the stems (log-mel frames, K-weighted energies)
        ahead = None
        if self.replay_batch > 1 and self._can_run_ahead:
            ahead = Ahead(self.sep, max_samples=AHEAD_SAMPLES, derive=self.windows.derive)
            self.windows.derive_elsewhere = True
        try:
            for block in source.blocks():
                if ahead is None:
                    self._consume(self._stems(block), source)
                elif block.size > AHEAD_SAMPLES:   # too long to run ahead: after the others, here
                    while len(ahead):
                        self._consume(self._stems(*ahead.take()), source)
                    stems = self._stems(block)
                    self.windows.derive(stems)
                    self._consume(stems, source)
                else:
                    ahead.submit(block)
                    if ahead.full:
                        self._consume(self._stems(*ahead.take()), source)
                if stop is not None and stop.is_set():
                    st.reason = "interrupted"
                    break
        except EmotrackError as exc:
            error = exc
            st.reason = f"error: {exc}"
        except KeyboardInterrupt:
            st.reason = "interrupted"
        finally:
            # Whatever happened, what was captured is processed and published.
            try:
                if ahead is not None:
                    try:
                        while len(ahead) and not ahead.failed:
                            self._consume(self._stems(*ahead.take()), source)
                    except EmotrackError as exc:
                        if error is None:
                            error, st.reason = exc, f"error: {exc}"
                    finally:
                        ahead.close()
                        self.windows.derive_elsewhere = False
                self._drain()
                self._fed = None
                tail = self.sep.flush()
                if not self.sep.identity and tail["speech"].size:
                    for wins in self.windows.push(tail):
                        self._process(wins)
                rest = self.windows.flush()
                if rest:
                    self._process(rest)
                self._drain()
            finally:
                self.windows.close()
                self.publish_end(source, t0)
        if error is not None:
            raise error
        return st

    def _consume(self, stems: dict[str, np.ndarray], source: Source) -> None:
        """Windows, inference and publication of a block's stems; progress and heartbeats."""
        for wins in self.windows.push(stems):
            self._process(wins)
            if source.live and source.last_arrival is not None:
                self.stats.hop_latency_ms.append((time.monotonic() - source.last_arrival) * 1000.0)
        now = time.monotonic()
        if self.progress is not None:
            self.progress(self.windows.total / SAMPLE_RATE)
        if now >= self._next_beat:
            self.pub.status("heartbeat", counters=self.counters(source))
            self._next_beat = now + self.heartbeat_s

    def publish_start(self, source: Source) -> None:
        extra = {"adaptation": {s: {"method": adapt.METHOD, "input": a.input, "prior_n": a.prior_n}
                                for s, a in self.adaptation.items()}} if self.adaptation else {}
        if self.trackers:
            extra["tracking"] = {"method": tracking.METHOD, "smooth_s": {s: t.tau for s, t in self.trackers.items()},
                                 "params": {s: t.params() for s, t in self.trackers.items()}}
        self.pub.status("start", models={s: m.id for s, m in self.models.items()}, **extra,
                        backend={s: m.backend.description for s, m in self.models.items()},
                        separator=self.sep.name, live=source.live,
                        separator_latency_s=round(self.sep.latency_samples / SAMPLE_RATE, 3),
                        windows={s: {"window_s": float(m.card["window_s"]), "hop_s": self.hops_s[s]}
                                 for s, m in self.models.items()})

    def publish_end(self, source: Source, t0: float) -> None:
        """Final stats and the ``end`` status (``t0``: ``time.monotonic()`` at the start)."""
        st = self.stats
        st.stream_seconds = self.windows.total / SAMPLE_RATE
        st.wall_seconds = time.monotonic() - t0
        st.warning = source.warning
        end = {"reason": st.reason, "counters": self.counters(source),
               "realtime_factor": round(st.realtime_factor, 2) if st.wall_seconds > 0 else None}
        if st.warning:
            end["warning"] = st.warning
        if st.hop_latency_ms:
            end["hop_latency_ms"] = st.latency_percentiles()
        self.pub.status("end", **end)
