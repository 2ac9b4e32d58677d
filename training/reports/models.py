"""Write docs/MODELS.md from the model cards in engines/models.

    python -m training.reports.models [--models engines/models] [--out docs/MODELS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from streamer.taxonomy import QUADRANTS


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


def section(card: dict) -> list[str]:
    """The markdown section of one card."""
    sp = card["speed"]["forward_pass"]
    td = card["training_data"]
    recipe = card.get("recipe")  # cards of recipe runs (training.recipe) have the resolved recipe
    fresh = not recipe or recipe["train"].get("resample_windows", True)
    inputs = ", ".join(f"`{i['name']}` {i['shape']}" for i in card["inputs"])
    mixing = card["protocol"].get("mixing") or (f"mode {td['mixing']['mode']}, other source from "
                                                f"{', '.join(td['mixing']['others'])}" if "mixing" in td else "-")
    default = Path(card["onnx"]).stem == card["source"]
    lines = [f"## {card['source']} model{'' if default else ' (alternative)'}: `{card['id']}`", "",
             f"- files: `engines/models/{card['onnx']}` ({card['onnx_bytes']} bytes, sha256 "
             f"`{card['onnx_sha256'][:16]}...`), card `engines/models/{Path(card['onnx']).stem}.json`",
             f"- window {card['window_s']:g} s, hop {card['hop_s']:g} s, input {inputs}, outputs `quadrant` "
             f"(Q1..Q4 softmax), `va` (tanh), `activity` (sigmoid)",
             f"- architecture: {card['architecture']}",
             f"- ONNX ops: {', '.join(card['onnx_op_types'])}",
             f"- forward pass (onnxruntime CPU, 1 thread, batch 1): median {sp['median_ms']} ms, "
             f"p90 {sp['p90_ms']} ms; Keras vs ONNX max abs diff {card['speed']['keras_onnx_max_abs_diff']:.2g}",
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
    act = card["activity"]
    lines += ["### Activity head", "",
              f"Mean activity: with {card['source']} {act['with_target_source']:.3f}; other source only "
              f"{act['other_source_only']:.3f}; near-silence {act['near_silence_-80dBFS_noise']:.3f}. "
              f"({act['protocol']})", "", "### Confusion matrices", ""]
    lines += confusions({**card["metrics"], **cc})
    lines += ["### Training history", "", "| epoch | train loss | val loss | val macro-F1 |",
              "|---|---|---|---|"]
    lines += [f"| {h['epoch']} | {h['train_loss']} | {h['val_loss']} | {h['val_macro_f1']} |"
              for h in td["history"]]
    return lines + [""]


def separator_section(card: dict) -> list[str]:
    """The markdown section of the built-in separator's card."""
    tr, td, m = card["training"], card["training_data"], card["metrics"]
    st = card["stft"]
    lines = [f"## separator: `{card['id']}`", "",
             f"- files: `engines/models/{card['onnx']}` ({card['onnx_bytes']} bytes, sha256 "
             f"`{card['onnx_sha256'][:16]}...`), card `engines/models/{Path(card['onnx']).stem}.json`",
             f"- task: {card['task']}",
             f"- STFT: {st['sample_rate']} Hz, {st['n_fft']}-point frames every {st['hop']} samples "
             f"(sqrt-Hann); {st['context']} frames of context each side, chunks of {st['chunk']} frames; "
             f"latency {(st['chunk'] + st['context']) * st['hop'] + st['n_fft'] - st['hop']} samples "
             f"({((st['chunk'] + st['context']) * st['hop'] + st['n_fft'] - st['hop']) / st['sample_rate']:.3f} s)",
             f"- architecture: {card['architecture']}",
             f"- training: {tr['epochs_run']} epochs, best validation loss {tr['best_val_loss']}, "
             f"{tr['minutes']} min on 2 CPU cores, seed {tr['seed']}; Keras vs ONNX max abs diff "
             f"{tr['parity_max_abs_diff']:.2g}; command `{tr['command']}`",
             f"- data: speech {td['speech']}; music {td['music']}; {td['mixing']}",
             f"- licence: {card['licence']}", "",
             f"Protocol: {card['protocol']}.", "",
             "| speech-to-music ratio | SI-SDR improvement, speech (mean / median) | music (mean / median) |",
             "|---|---|---|"]
    for k, v in m["test"].items():
        if isinstance(v, dict) and "speech" in v and isinstance(v["speech"], dict):
            lines.append(f"| {k} | {v['speech']['si_sdr_improvement_db_mean']:+.2f} / "
                         f"{v['speech']['si_sdr_improvement_db_median']:+.2f} dB | "
                         f"{v['music']['si_sdr_improvement_db_mean']:+.2f} / "
                         f"{v['music']['si_sdr_improvement_db_median']:+.2f} dB |")
    pa = m["test"].get("presence_frame_accuracy", {})
    lines += ["", f"{m['test'].get('mixtures_per_ratio')} mixtures of {m['test'].get('seconds')} s per ratio. "
              f"Presence, frame accuracy at 0.5 on the same mixtures: speech {_pct(pa.get('speech'))}, "
              f"music {_pct(pa.get('music'))}. Speed (streaming, 1 s blocks, 1 thread): "
              f"{m['speed']['realtime_factor']}x real time.", "",
              "### Training history", "", "| epoch | loss | val loss |", "|---|---|---|"]
    lines += [f"| {h['epoch']} | {h['loss']} | {h['val_loss']} |" for h in tr["history"]]
    return lines + [""]


def main(argv: Optional[list[str]] = None) -> int:
    """Render docs/MODELS.md (header text + one section per card)."""
    ap = argparse.ArgumentParser(prog="python -m training.reports.models")
    ap.add_argument("--models", default="engines/models")
    ap.add_argument("--out", default="docs/MODELS.md")
    ap.add_argument("--preamble", default=None, help="markdown file inserted after the title")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    lines = ["# emotrack models", ""]
    if a.preamble:
        lines += [Path(a.preamble).read_text().rstrip(), ""]
    # the defaults first, then any other emotion model shipped beside them (e.g. music_dnn)
    cards = sorted(Path(a.models).glob("*.json"), key=lambda p: ({"speech": 0, "music": 1}.get(p.stem, 2), p.stem))
    for p in cards:
        if p.stem != "separator":
            card = json.loads(p.read_text())
            if "system" in card:  # a scikit-learn model exported with skl2onnx (training.speech_model)
                from .speech_model import card_section
                lines += card_section(card)
            else:
                lines += section(card)
    p = Path(a.models) / "separator.json"
    if p.exists():
        lines += separator_section(json.loads(p.read_text()))
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
