"""Train the shipped models: their recipes (``training/recipes/speech.toml``, ``music.toml``) run by
the one training loop (:mod:`training.loop`) like any other recipe, exported beside the other
shipped files, then measured on every held-out set their cards report.

    python -m training.train speech|music [--out engines/models] [--run-dir runs/KIND] [--epochs N]
                             [--max-clips N] [--windows N] [--seed S] [--threads T] [--patience P]
                             [--max-minutes M] [--train-corpora a,b] [--separator none|builtin]
                             [--separator-model PATH] [--set KEY=VALUE ...] [--resume] [--eval-only]

(also ``emotrack train speech|music``).  The options are shorthands for recipe overrides
(``--windows`` is ``train.windows_per_epoch``, ``--train-corpora`` is ``data.corpora``, ...).
Checkpoints and the resolved recipe go to ``--run-dir``; ``OUT/KIND.onnx`` and its card to
``--out``.  Without ``--max-clips`` the card also gets the held-out sets beyond the test split
(:func:`training.evaluate.held_out_extras`: corpora never trained on, the activity head).
``--eval-only`` re-measures ``OUT/KIND.onnx`` and rewrites its card's metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from engines.cards import ModelCard
from streamer.errors import EmotrackError

from .config import licence, resolve
from .evaluate import evaluate_model, held_out_extras
from .loop import train


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="emotrack train", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["speech", "music"])
    ap.add_argument("--out", default="engines/models", help="folder of KIND.onnx and its card")
    ap.add_argument("--run-dir", default=None, help="checkpoints and resolved recipe (default runs/KIND)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-clips", type=int, default=None,
                    help="at most N clips per corpus and split (quick test run)")
    ap.add_argument("--windows", type=int, default=None, help="training windows per epoch")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop training (keep the best epoch) after this many minutes")
    ap.add_argument("--train-corpora", default=None,
                    help="comma list: train on these target corpora only (e.g. ravdess); the left-out "
                         "corpora are then measured as never trained on")
    ap.add_argument("--separator", default=None, choices=["none", "builtin"],
                    help="train and evaluate on this separator's stem of every window (the streaming "
                         "pipeline must then run the same --separator)")
    ap.add_argument("--separator-model", default=None, help="builtin separator ONNX (default: the shipped one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any recipe override")
    ap.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    ap.add_argument("--eval-only", action="store_true", help="skip training: measure OUT/KIND.onnx, rewrite its card")
    return ap.parse_args(argv)


def overrides(a: argparse.Namespace) -> list[str]:
    """The recipe overrides the shorthand options stand for."""
    sets = []
    for key, val in (("train.epochs", a.epochs), ("data.max_clips", a.max_clips),
                     ("train.windows_per_epoch", a.windows), ("seed", a.seed), ("train.patience", a.patience),
                     ("mixing.separator", a.separator and repr(a.separator))):
        if val is not None:
            sets.append(f"{key}={val}")
    if a.train_corpora:
        sets.append("data.corpora=" + json.dumps(a.train_corpora.split(",")))
    if a.separator_model:
        sets.append("mixing.separator_model=" + json.dumps(a.separator_model))
    return sets + list(a.set)


def run(a: argparse.Namespace, command: str) -> None:
    cfg = resolve(a.kind, overrides(a))
    onnx_path = Path(a.out) / f"{a.kind}.onnx"
    if a.eval_only:
        from engines.cards import read_card

        card = read_card(onnx_path)
        card["metrics"] = evaluate_model(onnx_path, cfg, "test", threads=a.threads,
                                         adaptation=card.get("adaptation"))
    else:
        run_dir = Path(a.run_dir or Path("runs") / a.kind)
        card = train(cfg, run_dir, resume=a.resume, max_minutes=a.max_minutes, threads=a.threads,
                     command=command, onnx_path=onnx_path)
    if not cfg["data"]["max_clips"]:
        card.update(held_out_extras(onnx_path, cfg, a.threads, card.get("adaptation")), licence=licence(cfg))
    print(f"wrote {ModelCard(card).write(onnx_path)}", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(parse(argv), "python -m training.train " + " ".join(argv))
    except EmotrackError as exc:
        print(f"emotrack: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
