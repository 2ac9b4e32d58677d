"""The recipes' command line: train, export and evaluate any recipe (the seeds' architectures
and the shipped speech and music models alike) with the one training loop (:mod:`training.loop`).

    python -m training.recipe train RECIPE [--out DIR] [--resume] [--max-clips N] [--epochs N]
                                    [--max-minutes M] [--set key=value ...] [--threads T]
    python -m training.recipe export RUN_DIR_OR_CKPT OUT.onnx [--last]
    python -m training.recipe evaluate MODEL.onnx [--split test] [--max-clips N] [--out FILE]
    python -m training.recipe list

(also ``emotrack train RECIPE``, ``emotrack export``, ``emotrack evaluate``).

RECIPE is a TOML file or the name of one in ``training/recipes/`` (:mod:`training.config`).  The recipe is
resolved (:data:`DEFAULTS` < file < ``--set`` overrides, e.g. ``--set
train.learning_rate=1e-3 --set arch.dense=64``) and written to
``OUT/resolved_config.json`` before training, seeds are fixed (numpy, Python and
TensorFlow; windows of epoch e come from a generator seeded by (seed, e), so a
resumed run sees the windows an uninterrupted one would), and then per epoch:

* ``windows_per_epoch`` fresh training windows from the TRAIN split (clean: the
  target clip alone; mixed: :mod:`training.data.mixing`'s recipe with the other source
  from the same split), with the inputs the architecture takes;
* one pass of Keras ``fit`` with a progress bar on stderr;
* validation on fixed windows of the VAL split: loss and macro-F1 of the
  classification head (``emotion`` with ``classes = "emotion8"``, else
  ``quadrant``; neutral and empty windows left out);
* a checkpoint in ``OUT/ckpt`` (weights + optimiser state + loop state), so
  ``--resume`` continues after the last finished epoch;
* early stopping on ``train.early_stopping`` (``val_macro_f1`` or ``val_loss``;
  never accuracy: seed 000 stopped on accuracy and ended up predicting the
  majority class) with ``train.patience``; the best epoch's weights are kept.

Then the best weights are exported to ``OUT/<name>.onnx`` (tf2onnx, opset 17),
compared with Keras on real validation windows (max abs diff < 1e-4 or the run
fails), evaluated clip-level on the TEST split (:func:`evaluate_model`) and
described in ``OUT/<name>.json``, a model card in the format of
``engines/models/speech.json`` with the resolved recipe in it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from streamer.errors import EmotrackError

from .config import RecipeError, SPLITS, input_names, licence, list_recipes, resolve, saved_config
from .evaluate import evaluate_model, held_out_extras
from .loop import _norm_from_json, _tf, build_model, finish, train

# ----------------------------------------------------------------------------- CLI

def _run_dir(path: Path) -> Path:
    """A run directory from a run dir or its ckpt dir."""
    for d in (path, path.parent):
        if (d / "resolved_config.json").is_file() and (d / "ckpt" / "state.json").is_file():
            return d
    raise RecipeError(f"{path}: not a training run (no resolved_config.json and ckpt/state.json)")


def cmd_export(a) -> int:
    run = _run_dir(Path(a.run))
    cfg = saved_config(json.loads((run / "resolved_config.json").read_text()))
    state = json.loads((run / "ckpt" / "state.json").read_text())
    tf = _tf(a.threads)
    model = build_model(cfg, _norm_from_json(state["norm"]))
    if a.last:
        tf.train.Checkpoint(model=model).restore(
            tf.train.latest_checkpoint(str(run / "ckpt" / "last"))).expect_partial()
    else:
        model.load_weights(str(run / "ckpt" / "best" / "weights"))
    z = np.load(run / "ckpt" / "probe.npz")
    finish(model, cfg, run, state, {n: z[n] for n in input_names(cfg)}, None, a.threads,
           "emotrack export " + " ".join(a.argv), time.time(), onnx_path=Path(a.output))
    return 0


def recipe_of(card: dict, p: Path, recipe: Optional[str] = None) -> dict:
    """The resolved recipe of a model: its card's, or ``recipe`` (a name or .toml) for a card
    written without one (the shipped models' cards from before they were recipes)."""
    if recipe:
        return resolve(recipe)
    if "recipe" not in card:
        raise RecipeError(f"{p.with_suffix('.json')} has no recipe: give the one that made it (--recipe speech, "
                          f"--recipe music, or a .toml)")
    return saved_config(card["recipe"])


def cmd_evaluate(a) -> int:
    from engines.cards import ModelCard, ModelCardError, read_card, sha256_of

    p = Path(a.model)
    try:
        card = read_card(p)
    except ModelCardError as exc:
        raise RecipeError(f"{exc} (emotrack evaluate needs the ONNX file and its card beside it)") from None
    cfg = recipe_of(card, p, a.recipe)
    res = evaluate_model(p, cfg, a.split, a.max_clips, threads=a.threads, adaptation=card.get("adaptation"))
    text = json.dumps({"model": str(p), "split": a.split, "max_clips": a.max_clips, "metrics": res}, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    else:
        print(text)
    if a.write_card:
        card["metrics"] = res
        if a.split == "test" and not a.max_clips:
            card.update(held_out_extras(p, cfg, a.threads, card.get("adaptation")), licence=licence(cfg))
        card["onnx_sha256"] = sha256_of(p)
        ModelCard(card).write(p)
    return 0


def cmd_train(a) -> int:
    if a.resume and not a.recipe:
        raise RecipeError("--resume needs the RECIPE too")
    sets = list(a.set or [])
    cfg = resolve(a.recipe, sets)
    if a.epochs:
        cfg["train"]["epochs"] = a.epochs
    if a.max_clips:
        cfg["data"]["max_clips"] = a.max_clips
    out = Path(a.out or Path("runs") / cfg["name"])
    train(cfg, out, resume=a.resume, max_minutes=a.max_minutes, threads=a.threads,
          command="emotrack train " + " ".join(a.argv))
    return 0


def cmd_list(a) -> int:
    for name in list_recipes():
        cfg = resolve(name)
        print(f"{name:16s} {cfg['task']:6s} {cfg['arch']['name']:10s} {cfg['description']}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (as the emotrack CLI)
        self.exit(2, f"emotrack: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="emotrack", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    t = sub.add_parser("train", help="train a recipe",
                       description="Train RECIPE (a .toml file or a name in training/recipes: "
                                   + ", ".join(list_recipes()) + "), export it to ONNX with a parity check "
                                   "and write its model card. `emotrack train speech|music` runs the "
                                   "shipped models' recipes the same way, into engines/models, and also "
                                   "measures their held-out sets (python -m training.train).")
    t.add_argument("recipe", metavar="RECIPE")
    t.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out after its last epoch")
    t.add_argument("--max-clips", type=int, default=None, help="at most N clips per corpus and split")
    t.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    t.add_argument("--max-minutes", type=float, default=None, help="stop (keeping the best epoch) after M minutes")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value (repeatable)")
    t.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2)")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("export", help="export a training run's best (or last) weights to ONNX",
                       description="Export RUN (a run directory or its ckpt/) to OUT.onnx with the Keras vs "
                                   "ONNX Runtime parity check and a model card beside it (no metrics: run "
                                   "evaluate --write-card).")
    e.add_argument("run", metavar="RUN_DIR_OR_CKPT")
    e.add_argument("output", metavar="OUT.onnx")
    e.add_argument("--last", action="store_true", help="the last epoch's weights instead of the best")
    e.add_argument("--threads", type=int, default=2)
    e.set_defaults(func=cmd_export)
    v = sub.add_parser("evaluate", help="clip-level metrics of a recipe model on a split",
                       description="Clip-level metrics of MODEL.onnx (made by a recipe run; its card beside "
                                   "it) on a split of its recipe's corpora: quadrant accuracy, macro-F1, UAR, "
                                   "arousal/valence halves, chance levels, VA CCC/RMSE, and 8-class metrics "
                                   "with an emotion head.")
    v.add_argument("model", metavar="MODEL.onnx")
    v.add_argument("--split", choices=SPLITS, default="test")
    v.add_argument("--max-clips", type=int, default=None)
    v.add_argument("--out", help="write the JSON here (default: stdout)")
    v.add_argument("--write-card", action="store_true",
                   help="store the metrics in the model card (on the whole test split also cross-corpus "
                        "metrics, the activity head's means and the licence of every corpus used)")
    v.add_argument("--recipe", default=None,
                   help="the recipe that made the model, for a card without one (the shipped models: speech, music)")
    v.add_argument("--threads", type=int, default=1)
    v.set_defaults(func=cmd_evaluate)
    ls = sub.add_parser("list", help="list the recipes in training/recipes")
    ls.set_defaults(func=cmd_list)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    a.argv = argv[1:]
    try:
        return int(a.func(a) or 0)
    except EmotrackError as exc:
        print(f"emotrack: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
