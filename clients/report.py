"""``emotrack report``: a programme report from a results JSONL.

Reads what ``emotrack replay --out`` or ``emotrack record`` wrote (schema-1
bodies with ``"topic"``), validates every line with :mod:`streamer.schema`
(invalid lines are skipped and counted), and draws with matplotlib (the
``report`` extra): the speech and music valence/arousal timelines (fading where
the source is absent), the valence-arousal plane, the time spent in each
quadrant per source, and the most positive, negative and aroused passages.
``-o report.html`` writes one self-contained page (the figure inline as SVG
plus tables); ``-o report.png`` the figure alone.
"""

from __future__ import annotations

import html
import io
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from streamer import schema
from streamer.errors import EmotrackError, InputError, ParameterError

QNAMES = {"Q1": "happy / excited", "Q2": "angry / afraid", "Q3": "sad / bored", "Q4": "calm / serene"}
QCOLORS = {"Q1": "#f4b400", "Q2": "#db4437", "Q3": "#4a5fc1", "Q4": "#2e9d4f"}
SRC_COLORS = {"speech": "#2e9d4f", "music": "#c2185b"}
VAL_COLOR, ARO_COLOR = "#1e88e5", "#fb8c00"


def fmt_t(s: float) -> str:
    s = max(0, int(round(s)))
    h, m, r = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{r:02d}" if h else f"{m}:{r:02d}"


@dataclass
class Run:
    """One publisher run of one stream: its emotion messages and status bodies."""

    stream: str
    emotion: dict = field(default_factory=lambda: {s: [] for s in schema.SOURCES})
    start: Optional[dict] = None
    end: Optional[dict] = None

    @property
    def n(self) -> int:
        return sum(len(v) for v in self.emotion.values())


def load(path: str, stream: Optional[str] = None) -> tuple[Run, dict]:
    """The run to report (the longest of the chosen stream) and notes on the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, expected a results .jsonl")
    runs: list[Run] = []
    current: dict[str, Run] = {}
    last_seq: dict[tuple, int] = {}
    notes = {"lines": 0, "invalid": 0, "first_error": None, "streams": set(), "runs": 0}
    try:
        fh = open(p, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            notes["lines"] += 1
            try:
                body = schema.parse_json(line)  # size, depth and strictness bounded
                if not isinstance(body, dict):
                    raise schema.SchemaError("not a JSON object")
                topic = body.pop("topic", None) or (schema.topic_for(body["source"]) if "source" in body
                                                    else schema.TOPIC_STATUS)
                schema.validate(topic, body)
            except (ValueError, KeyError, TypeError) as exc:
                notes["invalid"] += 1
                notes["first_error"] = notes["first_error"] or f"line {i}: {str(exc)[:120]}"
                continue
            name = body["stream"]
            notes["streams"].add(name)
            key = (name, topic)
            restarted = (topic == schema.TOPIC_STATUS and body["event"] == "start") or \
                        body["seq"] <= last_seq.get(key, -1)
            last_seq[key] = body["seq"]
            run = current.get(name)
            if run is None or (restarted and (run.n or run.start is not None)):
                for k in [k for k in last_seq if k[0] == name and k != key]:
                    del last_seq[k]   # a new run: every topic counts from 0 again
                run = current[name] = Run(name)
                runs.append(run)
            if topic == schema.TOPIC_STATUS:
                if body["event"] == "start":
                    run.start = body
                elif body["event"] == "end":
                    run.end = body
            else:
                run.emotion[body["source"]].append(body)
    if notes["lines"] == 0:
        raise InputError(f"{path}: empty; expected the JSONL of `emotrack replay --out` or `emotrack record`")
    candidates = [r for r in runs if r.n and (stream is None or r.stream == stream)]
    if not candidates:
        what = f"stream {stream!r}" if stream else "any stream"
        extra = f" ({notes['invalid']} invalid lines; first: {notes['first_error']})" if notes["invalid"] else ""
        raise InputError(f"{path}: no schema-1 emotion messages for {what}{extra}")
    notes["runs"] = sum(1 for r in runs if r.n and r.stream == candidates[0].stream)
    run = max(candidates, key=lambda r: r.n)
    for s in schema.SOURCES:
        run.emotion[s].sort(key=lambda b: b["t_start"])
    notes["streams"] = sorted(notes["streams"])
    return run, notes


def _hop(msgs: list[dict]) -> float:
    if len(msgs) < 2:
        return (msgs[0]["t_end"] - msgs[0]["t_start"]) if msgs else 0.0
    d = [b["t_start"] - a["t_start"] for a, b in zip(msgs, msgs[1:]) if b["t_start"] > a["t_start"]]
    return statistics.median(d) if d else msgs[0]["t_end"] - msgs[0]["t_start"]


def mid(b: dict) -> float:
    return (b["t_start"] + b["t_end"]) / 2


def quadrant_time(msgs: list[dict], active: float) -> dict:
    """Seconds per quadrant while the source is active (each window stands for one hop)."""
    hop = _hop(msgs)
    out = {q: 0.0 for q in schema.QUADRANTS}
    out["inactive"] = 0.0
    for b in msgs:
        out[b["quadrant"] if b["activity"] >= active else "inactive"] += hop
    return out


def passages(msgs: list[dict], length: float, active: float, n: int = 3) -> dict:
    """Top-n non-overlapping passages of ``length`` s by mean valence (max, min) and arousal (max).

    A passage counts only its windows where the source is active, and must be
    active for at least half of its windows.
    """
    cands = []
    half = _hop(msgs) / 2
    for i, a in enumerate(msgs):
        t0 = mid(a)
        win = [b for b in msgs[i:] if mid(b) < t0 + length]
        act = [b for b in win if b["activity"] >= active]
        if not win or len(act) * 2 < len(win) or not act:
            continue
        w = [b["activity"] for b in act]
        sw = sum(w)
        cands.append({"t0": max(0.0, mid(win[0]) - half), "t1": mid(win[-1]) + half,
                      "valence": sum(b["valence"] * x for b, x in zip(act, w)) / sw,
                      "arousal": sum(b["arousal"] * x for b, x in zip(act, w)) / sw,
                      "activity": sw / len(win)})

    def top(key, reverse):
        chosen = []
        for c in sorted(cands, key=lambda c: c[key], reverse=reverse):
            if all(c["t1"] <= o["t0"] or c["t0"] >= o["t1"] for o in chosen):
                chosen.append(c)
            if len(chosen) == n:
                break
        return chosen

    return {"most positive": top("valence", True), "most negative": top("valence", False),
            "most aroused": top("arousal", True)}


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise EmotrackError("the report needs matplotlib: pip install 'emotrack[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PASSAGE_MARKS = (("most positive", "#2e7d32"), ("most negative", "#c62828"), ("most aroused", "#ef6c00"))


def figure(run: Run, active: float, title: str, passage: float = 10.0):
    """The report figure: two timelines, the VA plane, time per quadrant."""
    plt = _matplotlib()
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold"})
    fig = plt.figure(figsize=(16, 9.5), dpi=100)
    gs = fig.add_gridspec(3, 3, width_ratios=[2.2, 2.2, 1.6], height_ratios=[1, 1, 0.9],
                          hspace=0.42, wspace=0.28, left=0.05, right=0.98, top=0.9, bottom=0.07)
    fig.suptitle(title, fontsize=16, fontweight="bold", x=0.05, ha="left")
    t_max = max([b["t_end"] for s in schema.SOURCES for b in run.emotion[s]] or [1.0])
    for row, src in enumerate(schema.SOURCES):
        ax = fig.add_subplot(gs[row, :2])
        msgs = run.emotion[src]
        ax.set_xlim(0, t_max)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="#888", lw=0.8)
        ax.grid(alpha=0.3)
        ax.set_title(f"{src.capitalize()}: valence and arousal over programme time", color=SRC_COLORS[src],
                     loc="left")
        ax.set_ylabel("value")
        if msgs:
            t = [mid(b) for b in msgs]
            act = [b["activity"] for b in msgs]
            hop = _hop(msgs)
            ax.fill_between(t, -1.05, [-1.05 + 0.6 * a for a in act], step="mid", color="#999", alpha=0.35,
                            lw=0, label="activity")
            tracked = all("tracked" in b for b in msgs)
            if tracked:  # the raw window values thin and faint under the tracked curves
                for key, col in (("valence", VAL_COLOR), ("arousal", ARO_COLOR)):
                    ax.plot(t, [b[key] for b in msgs], color=col, lw=0.9, alpha=0.3)
                ax.plot(t, [b["tracked"]["confidence"] for b in msgs], color="#333", lw=1.0, ls=":",
                        label="confidence")
            for key, col in (("valence", VAL_COLOR), ("arousal", ARO_COLOR)):
                val = (lambda b, k=key: b["tracked"][k]) if tracked else (lambda b, k=key: b[k])
                segs, cols = [], []
                for a, b in zip(msgs, msgs[1:]):
                    if mid(b) - mid(a) > 3.5 * hop:
                        continue
                    segs.append([(mid(a), val(a)), (mid(b), val(b))])
                    cols.append(to_rgba(col, 0.12 + 0.88 * min(a["activity"], b["activity"])))
                ax.add_collection(LineCollection(segs, colors=cols, linewidths=2.6 if tracked else 2.0))
                ax.plot([], [], color=col, lw=2, label=key + (" (tracked; raw faint)" if tracked else ""))
            best = passages(msgs, passage, active, n=1)
            for k, (kind, col) in enumerate(PASSAGE_MARKS):
                for c in best[kind]:
                    ax.axvspan(c["t0"], c["t1"], color=col, alpha=0.13, lw=0)
                    ax.text((c["t0"] + c["t1"]) / 2, 1.02 - 0.14 * k, kind, ha="center", va="top", fontsize=9,
                            color=col, fontweight="bold",
                            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
            ax.legend(loc="lower right", ncol=3, fontsize=10, framealpha=0.8)
        else:
            ax.text(0.5, 0.5, f"no {src} messages", transform=ax.transAxes, ha="center", color="#888")
        step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800) if t_max / s <= 12), 3600)
        ax.set_xticks([i * step for i in range(int(t_max // step) + 1)])
        ax.set_xticklabels([fmt_t(x) for x in ax.get_xticks()])
        if row == 1:
            ax.set_xlabel("programme time (m:ss); thick: tracked curves, thin: raw windows; lines fade where the "
                          "source is absent, grey: activity, dotted: confidence")

    ax = fig.add_subplot(gs[:2, 2])
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
    for q, (x0, y0) in {"Q1": (0, 0), "Q2": (-1, 0), "Q3": (-1, -1), "Q4": (0, -1)}.items():
        ax.add_patch(Rectangle((x0, y0), 1, 1, color=QCOLORS[q], alpha=0.08, lw=0))
        ax.text(x0 + (0.97 if x0 == 0 else 0.03), y0 + (0.97 if y0 == 0 else 0.03),
                f"{q}\n{QNAMES[q]}", ha="right" if x0 == 0 else "left", va="top" if y0 == 0 else "bottom",
                fontsize=11, fontweight="bold", color=QCOLORS[q])
    ax.axhline(0, color="#888", lw=0.8)
    ax.axvline(0, color="#888", lw=0.8)
    for src, marker in (("speech", "o"), ("music", "s")):
        msgs = run.emotion[src]
        if msgs:
            ax.scatter([b["valence"] for b in msgs], [b["arousal"] for b in msgs], s=18, marker=marker,
                       c=[to_rgba(SRC_COLORS[src], 0.1 + 0.6 * b["activity"]) for b in msgs], label=src)
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title("Valence-arousal plane", loc="left")
    if any(run.emotion.values()):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=10, frameon=False,
                  title="opacity = activity", title_fontsize=9)

    ax = fig.add_subplot(gs[2, :])
    labels = list(schema.QUADRANTS) + ["inactive"]
    ypos = {"speech": 1, "music": 0}
    for src in schema.SOURCES:
        qt = quadrant_time(run.emotion[src], active)
        total = sum(qt.values()) or 1.0
        left = 0.0
        for q in labels:
            w = 100 * qt[q] / total
            ax.barh(ypos[src], w, left=left, color=QCOLORS.get(q, "#cccccc"), edgecolor="white", height=0.6)
            if w >= 4:
                ax.text(left + w / 2, ypos[src], f"{q if q != 'inactive' else 'absent'}\n{fmt_t(qt[q])}",
                        ha="center", va="center", fontsize=10, color="white" if q != "inactive" else "#333")
            left += w
    ax.set_yticks([1, 0])
    ax.set_yticklabels(["speech", "music"])
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"% of programme time (the model's quadrant while the source is active, activity >= {active:g})")
    ax.set_title("Time per quadrant", loc="left")
    return fig, plt


def _table(headers: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def render_html(run: Run, notes: dict, svg: str, source_path: str, active: float, length: float) -> str:
    e = html.escape
    models = {s: (run.emotion[s][0]["model"] if run.emotion[s] else "-") for s in schema.SOURCES}
    duration = max([b["t_end"] for s in schema.SOURCES for b in run.emotion[s]] or [0])
    qrows = []
    for src in schema.SOURCES:
        qt = quadrant_time(run.emotion[src], active)
        total = sum(qt.values()) or 1.0
        qrows.append([f"<b>{src}</b>"] + [f"{fmt_t(qt[q])} ({100 * qt[q] / total:.0f}%)"
                                         for q in list(schema.QUADRANTS) + ["inactive"]])
    prows = []
    for src in schema.SOURCES:
        for kind, items in passages(run.emotion[src], length, active).items():
            for rank, c in enumerate(items, 1):
                prows.append([e(src), e(kind), str(rank), f"{fmt_t(c['t0'])} &ndash; {fmt_t(c['t1'])}",
                              f"{c['valence']:+.2f}", f"{c['arousal']:+.2f}", f"{c['activity']:.2f}"])
    end = run.end or {}
    counters = end.get("counters") or {}
    facts = [("stream", e(run.stream)), ("results file", e(source_path)), ("programme length", fmt_t(duration)),
             ("speech model", e(models["speech"])), ("music model", e(models["music"])),
             ("windows", f"{len(run.emotion['speech'])} speech, {len(run.emotion['music'])} music"),
             ("end of stream", e(str(end.get("reason", "not in the file")))),
             ("real-time factor", e(str(end.get("realtime_factor", "-")))),
             ("dropped", f"pub {counters.get('pub_dropped', '-')}, blocks {counters.get('blocks_dropped', '-')}, "
                         f"capture overflows {counters.get('capture_overflows', '-')}"),
             ("lines", f"{notes['lines']} read, {notes['invalid']} invalid skipped"
                       + (f" (first: {e(notes['first_error'])})" if notes["first_error"] else "")),
             ("generated", time.strftime("%Y-%m-%d %H:%M:%S %Z"))]
    if notes["runs"] > 1:
        facts.append(("note", f"the file holds {notes['runs']} runs of this stream; this is the longest"))
    if len(notes["streams"]) > 1:
        facts.append(("other streams", e(", ".join(s for s in notes["streams"] if s != run.stream))))
    fact_html = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    from streamer.segments import segments_of

    srows = [[e(sg.source), f"{fmt_t(sg.start)} &ndash; {fmt_t(sg.end)}", fmt_t(sg.duration),
              f"{sg.quadrant} {QNAMES[sg.quadrant]}", f"{sg.confidence:.0%}", f"{sg.valence:+.2f}",
              f"{sg.arousal:+.2f}", f"{sg.valence_raw:+.2f}", f"{sg.arousal_raw:+.2f}"]
             for sg in segments_of(run.emotion["speech"] + run.emotion["music"])]
    qhead = ["source"] + [f"{q} {QNAMES[q]}" for q in schema.QUADRANTS] + ["absent"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emotrack report: {e(run.stream)}</title>
<style>
body {{ font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px auto; padding: 0 24px; max-width: 1650px;
  color: #1f2328; }}
h1 {{ margin-bottom: 4px; }} h2 {{ margin-top: 28px; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ border: 1px solid #d0d7de; padding: 5px 10px; text-align: left; font-variant-numeric: tabular-nums; }}
thead th {{ background: #f6f8fa; }}
.facts th {{ background: #f6f8fa; width: 180px; }}
.fig svg {{ width: 100%; height: auto; }}
.note {{ color: #57606a; }}
</style></head><body>
<h1>Emotion report: {e(run.stream)}</h1>
<p class="note">Speech and music valence/arousal in [-1, 1] (Russell quadrants: Q1 happy/excited, Q2 angry/afraid,
Q3 sad/bored, Q4 calm/serene), estimated by emotrack in sliding windows.</p>
<table class="facts">{fact_html}</table>
<h2>Timelines and valence-arousal plane</h2>
<div class="fig">{svg}</div>
<h2>Time per quadrant</h2>
<p class="note">Quadrant (the model's quadrant output) of each window while the source is active (activity &ge; {active:g}); each window
stands for one hop.</p>
{_table(qhead, qrows)}
<h2>Passages</h2>
<p class="note">Passages of {length:g} s ranked by the activity-weighted mean valence or arousal of their active
windows (at least half of the passage active), without overlap.</p>
{_table(["source", "ranking", "#", "time", "valence", "arousal", "activity"], prows)}
<h2>Segments</h2>
<p class="note">Contiguous passages of speech or music (tracked presence), each with its dominant tracked quadrant
and the mean posterior probability of it (confidence: 25 % is no idea), the mean tracked valence/arousal and the
mean raw window values (emotrack segments writes the same as CSV, Praat TextGrid or Audacity labels).</p>
{_table(["source", "time", "length", "quadrant", "confidence", "valence", "arousal", "raw valence", "raw arousal"],
        srows) if srows else '<p class="note">none</p>'}
</body></html>
"""


def save_png(fig, path: str) -> None:
    """The figure as a compact PNG: 256-colour palette (a third of the size, same look)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    try:
        from PIL import Image   # matplotlib depends on Pillow
    except ImportError:
        Path(path).write_bytes(buf.getvalue())
        return
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def write_report(results: str, out: str, png: Optional[str] = None, stream: Optional[str] = None,
                 passage: float = 10.0, active: float = 0.5) -> list[str]:
    kinds = {".html": "html", ".htm": "html", ".png": "png"}
    targets = [(out, kinds.get(Path(out).suffix.lower()))] + ([(png, kinds.get(Path(png).suffix.lower()))]
                                                             if png else [])
    for path, kind in targets:
        if kind is None:
            raise ParameterError(f"{path!r}: the report is written as .html or .png")
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise EmotrackError(f"cannot write {path}: no directory {parent}")
    if not 0 <= active <= 1:
        raise ParameterError(f"--active {active}: must be within [0, 1]")
    run, notes = load(results, stream)
    duration = max(b["t_end"] for s in schema.SOURCES for b in run.emotion[s])
    title = f"emotrack report: {run.stream} ({fmt_t(duration)})"
    fig, plt = figure(run, active, title, passage)
    written = []
    try:
        for path, kind in targets:
            try:
                if kind == "png":
                    save_png(fig, path)
                else:
                    buf = io.StringIO()
                    fig.savefig(buf, format="svg")
                    svg = buf.getvalue()
                    svg = svg[svg.index("<svg"):]
                    Path(path).write_text(render_html(run, notes, svg, results, active, passage), encoding="utf-8")
            except OSError as exc:
                raise EmotrackError(f"cannot write {path}: {exc.strerror}") from None
            written.append(path)
    finally:
        plt.close(fig)
    return written


def run(args) -> int:
    import sys

    written = write_report(args.results, args.out, args.png, args.stream, args.passage, args.active)
    print(f"emotrack report: wrote {', '.join(written)}", file=sys.stderr)
    return 0
