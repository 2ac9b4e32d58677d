"""Write docs/MODELS.md from the model cards in engines/models.

    python -m training.reports.models --preamble training/reports/models_preamble.md [--models engines/models]
        [--notes training/reports/model_notes] [--out docs/MODELS.md]

One section per shipped card (every ``*.json`` beside an ONNX file), the defaults of
:data:`engines.cards.DEFAULT_MODELS` first, then the other emotion models, then the other models (presence
detector, front ends, separator).  A field a card lacks (``speed``, ``activity``, a training history...) drops
its line, never the page.  Prose that no card holds lives in the preamble and in ``<notes>/<stem>.md``, appended
to that model's section.  ``tests/training/test_models_report.py`` checks that docs/MODELS.md is this output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from engines.cards import DEFAULT_MODELS
from streamer.taxonomy import QUADRANTS

NOTES_DIR = Path(__file__).with_name("model_notes")


def heading(card: dict, stem: str, kind: str = "model") -> str:
    """``## <source> model (the default | by path ...): `<id>```."""
    src = card.get("source", stem)
    if src in ("speech", "music") and kind == "model":
        how = (" (the default)" if DEFAULT_MODELS.get(src) == f"{stem}.onnx"
               else f" (alternative, by path `--{src}-model engines/models/{stem}.onnx`)")
        return f"## {src} model{how}: `{card.get('id', stem)}`"
    return f"## {kind}: `{card.get('id', stem)}`"


def files_line(card: dict, stem: str) -> str:
    size = f"{card['onnx_bytes']} bytes, " if "onnx_bytes" in card else ""
    sha = f"sha256 `{card['onnx_sha256'][:16]}...`" if "onnx_sha256" in card else "no sha256"
    return (f"- files: `engines/models/{card.get('onnx', stem + '.onnx')}` ({size}{sha}), "
            f"card `engines/models/{stem}.json`")


def _shape(io: dict) -> str:
    lab = f" ({', '.join(map(str, io['labels']))})" if io.get("labels") and len(io["labels"]) <= 8 else ""
    return f"`{io.get('name', '?')}` {io.get('shape', '')}{lab}"


def speed_lines(card: dict) -> list[str]:
    """A line per timed forward pass the card holds (any ``*forward_pass`` entry of ``speed``)."""
    sp = card.get("speed")
    if not isinstance(sp, dict):
        return []
    out = []
    for k, v in sp.items():
        if k.endswith("forward_pass") and isinstance(v, dict) and "median_ms" in v:
            what = k[:-len("forward_pass")].replace("_", " ").strip() or "model"
            out.append(f"- {'' if what == 'model' else what + ' '}forward pass (onnxruntime CPU, "
                       f"{v.get('threads', 1)} thread, batch {v.get('batch', 1)}): median {v['median_ms']} ms"
                       + (f", p90 {v['p90_ms']} ms" if "p90_ms" in v else ""))
    diffs = [f"{k.replace('_onnx_', ' vs ONNX ').replace('_', ' ').replace('keras', 'Keras')} {v:.2g}"
             for k, v in sp.items() if k.endswith("max_abs_diff") and isinstance(v, (int, float))]
    if diffs and out:
        out[-1] += "; " + "; ".join(diffs)
    elif diffs:
        out.append("- parity: " + "; ".join(diffs))
    return out


def notes(stem: str, notes_dir: Optional[Path]) -> list[str]:
    """The hand-written notes of a model (``<notes_dir>/<stem>.md``), if any."""
    p = notes_dir / f"{stem}.md" if notes_dir else None
    return [p.read_text().rstrip(), ""] if p and p.exists() else []


def generic_section(card: dict, stem: str) -> list[str]:
    """Section of a card with no dedicated renderer: every line whose field the card has."""
    td, tr = card.get("training_data"), card.get("training")
    kind = ("presence detector" if "presence" in {o.get("name") for o in card.get("outputs", [])}
            else "front end" if card.get("kind") == "front_end" else "model")
    lines = [heading(card, stem, kind), "", files_line(card, stem)]
    if "task" in card:
        lines.append(f"- task: {card['task']}")
    if "window_s" in card:
        lines.append(f"- window {card['window_s']:g} s" + (f", hop {card['hop_s']:g} s" if "hop_s" in card else "")
                     + (f", latency {card['latency_s']:g} s" if "latency_s" in card else ""))
    if card.get("inputs"):
        lines.append("- inputs: " + ", ".join(_shape(i) for i in card["inputs"])
                     + (f" (input versions {json.dumps(card['input_versions'])})" if "input_versions" in card else ""))
    if card.get("outputs"):
        lines.append("- outputs: " + ", ".join(_shape(o) for o in card["outputs"]))
    if "architecture" in card:
        lines.append(f"- architecture: {card['architecture']}"
                     + (f"; {card['parameters']} parameters" if "parameters" in card else ""))
    if card.get("onnx_op_types"):
        lines.append(f"- ONNX ops (opset {card.get('onnx_opset', '?')}): {', '.join(card['onnx_op_types'])}")
    lines += speed_lines(card)
    if isinstance(card.get("parity"), dict):
        lines.append("- parity: " + "; ".join(f"{k.replace('_', ' ')} {v:.2g}" for k, v in card["parity"].items()
                                               if isinstance(v, (int, float))))
    if isinstance(tr, dict):
        bits = [f"{tr['minutes']} min on CPU" if "minutes" in tr else "", f"seed {tr['seed']}" if "seed" in tr else "",
                f"parity max abs diff {tr['parity_max_abs_diff']:.2g}" if "parity_max_abs_diff" in tr else "",
                f"command `{tr['command']}`" if "command" in tr else ""]
        lines.append("- training: " + "; ".join(b for b in bits if b))
    if isinstance(td, dict):
        lines.append("- data: " + "; ".join(f"{k.replace('_', ' ')} {v if isinstance(v, str) else json.dumps(v)}"
                                           for k, v in td.items()))
    if "licence" in card:
        lines.append(f"- licence: {card['licence']}")
    if "command" in card:
        lines.append(f"- command: `{card['command']}`")
    if isinstance(card.get("protocol"), str):
        lines += ["", f"Protocol: {card['protocol']}."]
    lines.append("")
    psa = card.get("metrics", {}).get("per_step_accuracy") if isinstance(card.get("metrics"), dict) else None
    if isinstance(psa, dict):
        srcs = sorted({s for split in psa.values() for s in split})
        subsets = sorted({k for split in psa.values() for s in split.values() for k in s if k != "accuracy"})
        lines += ["| split | " + " | ".join(f"{s} presence accuracy (all / " + " / ".join(subsets) + ")"
                                             for s in srcs) + " |", "|---" * (1 + len(srcs)) + "|"]
        for split, r in psa.items():
            lines.append(f"| {split} | " + " | ".join(
                " / ".join(_pct(r.get(s, {}).get(k)) for k in ["accuracy", *subsets]) for s in srcs) + " |")
        lines.append("")
    return lines


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def metric_table(named: dict) -> list[str]:
    """Markdown table of clip-level metrics, one row per evaluation set."""
    rows = ["| evaluation set | clips | 4Q acc | 4Q macro-F1 | chance (majority / uniform) | "
            "arousal-half acc (VA head / quadrant probs) | valence-half acc (VA head / quadrant probs) "
            "| half chance (majority A / V) |",
            "|---|---|---|---|---|---|---|---|"]
    for name, m in named.items():
        if not isinstance(m, dict) or "quadrant_accuracy" not in m:
            continue
        rows.append(
            f"| {name} | {m['n_clips']} | {_pct(m['quadrant_accuracy'])} | {m['quadrant_macro_f1']:.3f} | "
            f"{_pct(m['chance_quadrant_majority'])} / 25 % | "
            f"{_pct(m['arousal_half_accuracy'])} / {_pct(m['arousal_half_accuracy_from_quadrant_probs'])} | "
            f"{_pct(m['valence_half_accuracy'])} / {_pct(m['valence_half_accuracy_from_quadrant_probs'])} | "
            f"{_pct(m['chance_arousal_majority'])} / {_pct(m['chance_valence_majority'])} |")
    return rows


def confusions(named: dict) -> list[str]:
    """Confusion matrices (rows true, columns predicted)."""
    out = []
    for name, m in named.items():
        if not isinstance(m, dict) or "confusion_rows_true_cols_pred" not in m:
            continue
        out += [f"`{name}` (rows: true, columns: predicted)", "",
                "| | " + " | ".join(QUADRANTS) + " |", "|---" * 5 + "|"]
        for q, r in zip(QUADRANTS, m["confusion_rows_true_cols_pred"]):
            out.append(f"| {q} | " + " | ".join(map(str, r)) + " |")
        out.append("")
    return out


def section(card: dict, stem: str) -> list[str]:
    """The markdown section of an emotion model trained by training.train / training.recipe."""
    td = card["training_data"]
    recipe = card.get("recipe")  # cards of recipe runs (training.recipe) have the resolved recipe
    fresh = not recipe or recipe["train"].get("resample_windows", True)
    inputs = ", ".join(f"`{i['name']}` {i['shape']}" for i in card["inputs"])
    mixing = card["protocol"].get("mixing") or (f"mode {td['mixing']['mode']}, other source from "
                                                f"{', '.join(td['mixing']['others'])}" if "mixing" in td else "-")
    lines = [heading(card, stem), "", files_line(card, stem),
             f"- window {card['window_s']:g} s, hop {card['hop_s']:g} s, input {inputs}, outputs `quadrant` "
             f"(Q1..Q4 softmax), `va` (tanh), `activity` (sigmoid)",
             f"- architecture: {card['architecture']}",
             f"- ONNX ops: {', '.join(card['onnx_op_types'])}",
             *speed_lines(card),
             f"- training: {td['epochs_run']} epochs of {td['windows_per_epoch']} "
             + ("freshly mixed windows" if fresh else "mixed windows, drawn once and reused every epoch")
             + f" (best epoch {td['best_epoch']} by validation macro-F1), {card['training_seconds']:.0f} s "
             + (f"of fitting ({card['total_seconds']:.0f} s in all, drawing the windows and evaluating included) "
                if recipe else "") + f"on 2 CPU cores; seed {card['seed']}",
             f"- data: {'; '.join(td['corpora'])}"
             + (f"; clip counts {json.dumps(td['clip_counts'])}" if "clip_counts" in td else ""),
             *([f"- sampling: {td['sampling']}"] if "sampling" in td else []),
             *([f"- recipe: `training/recipes/{recipe['name']}.toml` ({recipe['description']})"] if recipe else []),
             f"- licence: {card['licence']}",
             f"- command: `{card['command']}`",
             *([f"- note: {td['note']}"] if td.get("note") else []), "",
             "Protocol: " + (card["protocol"]["speech"] if card["source"] == "speech"
                             else card["protocol"]["music"]) + ". Mixing: " + mixing + ".",
             "", "### Held-out, clip level", ""]
    lines += metric_table(card["metrics"]) + [""]
    cc = {k: v for k, v in card.get("cross_corpus", {}).items() if isinstance(v, dict)}
    if cc:
        lines += ["### Cross-corpus (never trained on)", ""] + metric_table(cc) + [""]
    if "note" in card.get("cross_corpus", {}):
        lines += [f"Cross-corpus: {card['cross_corpus']['note']}", ""]
    act = card.get("activity")
    if isinstance(act, dict) and "with_target_source" in act:
        lines += ["### Activity head", "",
                  f"Mean activity: with {card['source']} {act['with_target_source']:.3f}; other source only "
                  f"{act['other_source_only']:.3f}; near-silence {act['near_silence_-80dBFS_noise']:.3f}. "
                  f"({act.get('protocol', '')})", ""]
    lines += ["### Confusion matrices", ""]
    lines += confusions({**card["metrics"], **cc})
    lines += ["### Training history", "", "| epoch | train loss | val loss | val macro-F1 |",
              "|---|---|---|---|"]
    lines += [f"| {h['epoch']} | {h['train_loss']} | {h['val_loss']} | {h['val_macro_f1']} |"
              for h in td["history"]]
    return lines + [""]


def separator_section(card: dict, stem: str = "separator") -> list[str]:
    """The markdown section of the built-in separator's card (a line per field the card has)."""
    tr, td, m = card.get("training", {}), card.get("training_data", {}), card.get("metrics", {})
    st = card.get("stft")
    lines = [f"## separator: `{card.get('id', stem)}`", "", files_line(card, stem)]
    if "task" in card:
        lines.append(f"- task: {card['task']}")
    if st:
        lat = (st["chunk"] + st["context"]) * st["hop"] + st["n_fft"] - st["hop"]
        lines.append(f"- STFT: {st['sample_rate']} Hz, {st['n_fft']}-point frames every {st['hop']} samples "
                     f"(sqrt-Hann); {st['context']} frames of context each side, chunks of {st['chunk']} frames; "
                     f"latency {lat} samples ({lat / st['sample_rate']:.3f} s)")
    if "architecture" in card:
        lines.append(f"- architecture: {card['architecture']}")
    if tr:
        lines.append(f"- training: {tr.get('epochs_run')} epochs, best validation loss {tr.get('best_val_loss')}, "
                     f"{tr.get('minutes')} min on 2 CPU cores, seed {tr.get('seed')}"
                     + (f"; Keras vs ONNX max abs diff {tr['parity_max_abs_diff']:.2g}" if "parity_max_abs_diff" in tr
                        else "") + (f"; command `{tr['command']}`" if "command" in tr else ""))
    if td:
        lines.append(f"- data: speech {td.get('speech')}; music {td.get('music')}; {td.get('mixing')}")
    if "licence" in card:
        lines.append(f"- licence: {card['licence']}")
    lines.append("")
    if "protocol" in card:
        lines += [f"Protocol: {card['protocol']}.", ""]
    test = m.get("test", {}) if isinstance(m, dict) else {}
    rows = [(k, v) for k, v in test.items() if isinstance(v, dict) and isinstance(v.get("speech"), dict)]
    if rows:
        lines += ["| speech-to-music ratio | SI-SDR improvement, speech (mean / median) | music (mean / median) |",
                  "|---|---|---|"]
        for k, v in rows:
            lines.append(f"| {k} | {v['speech']['si_sdr_improvement_db_mean']:+.2f} / "
                         f"{v['speech']['si_sdr_improvement_db_median']:+.2f} dB | "
                         f"{v['music']['si_sdr_improvement_db_mean']:+.2f} / "
                         f"{v['music']['si_sdr_improvement_db_median']:+.2f} dB |")
        lines.append("")
    pa, rtf = test.get("presence_frame_accuracy"), (m.get("speed") or {}).get("realtime_factor")
    said = ([f"{test.get('mixtures_per_ratio')} mixtures of {test.get('seconds')} s per ratio."] if rows else []) \
        + ([f"Presence, frame accuracy at 0.5 on the same mixtures: speech {_pct(pa.get('speech'))}, "
            f"music {_pct(pa.get('music'))}."] if isinstance(pa, dict) else []) \
        + ([f"Speed (streaming, 1 s blocks, 1 thread): {rtf}x real time."] if rtf is not None else [])
    if said:
        lines += [" ".join(said), ""]
    if tr.get("history"):
        lines += ["### Training history", "", "| epoch | loss | val loss |", "|---|---|---|"]
        lines += [f"| {h['epoch']} | {h['loss']} | {h['val_loss']} |" for h in tr["history"]] + [""]
    return lines


def load_card(p: Path) -> Optional[dict]:
    """The card as a dict, or None (with a one-line message) when it is not a JSON object."""
    try:
        card = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        card = e
    if not isinstance(card, dict):
        print(f"skipped {p}: not a JSON object ({card})", file=sys.stderr)
        return None
    return card


def ordered_cards(models: Path) -> list[tuple[str, dict]]:
    """(stem, card) of every readable card with its ONNX file beside it: the defaults, the other emotion
    models, the other models (presence detector...), front ends, the separator."""
    defaults = [Path(f).stem for f in DEFAULT_MODELS.values()]

    def rank(item: tuple[str, dict]):
        stem, card = item
        if stem in defaults:
            return (0, defaults.index(stem), stem)
        if stem == "separator" or "stft" in card:
            return (4, 0, stem)
        if card.get("kind") == "front_end":
            return (3, 0, stem)
        if card.get("source") in ("speech", "music"):
            return (1, 0, stem)
        return (2, 0, stem)
    cards = [(p.stem, load_card(p)) for p in models.glob("*.json") if p.with_suffix(".onnx").exists()]
    return sorted(((stem, c) for stem, c in cards if c is not None), key=rank)


def card_lines(card: dict, stem: str) -> list[str]:
    """The section of one card, by the renderer its fields call for."""
    try:
        if stem == "separator" or "stft" in card:
            return separator_section(card, stem)
        if "system" in card:  # a scikit-learn model exported with skl2onnx (training.speech_model)
            from ..speech_model import card_section
            return [heading(card, stem)] + card_section(card)[1:]
        if isinstance(card.get("training_data"), dict) and "history" in card["training_data"] \
                and isinstance(card.get("metrics"), dict) and isinstance(card.get("protocol"), dict):
            return section(card, stem)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        pass  # a card without a field its dedicated renderer needs: the lines of the fields it has
    return generic_section(card, stem)


def main(argv: Optional[list[str]] = None) -> int:
    """Render docs/MODELS.md (header text + one section per card)."""
    ap = argparse.ArgumentParser(prog="python -m training.reports.models")
    ap.add_argument("--models", default="engines/models")
    ap.add_argument("--out", default="docs/MODELS.md")
    ap.add_argument("--preamble", default=None, help="markdown file inserted after the title")
    ap.add_argument("--notes", type=Path, default=NOTES_DIR, help="folder of <stem>.md notes per model")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    lines = ["# emotrack models", ""]
    if a.preamble:
        lines += [Path(a.preamble).read_text().rstrip(), ""]
    for stem, card in ordered_cards(Path(a.models)):
        lines += card_lines(card, stem) + notes(stem, a.notes)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
