"""``emotrack train | export | evaluate``: the training commands of the one ``emotrack`` CLI.

They take the rest of the command line as it is (``PASS_THROUGH``: ``--help`` included) and
hand it to :mod:`training.train` (``train speech|music``: the shipped models) or
:mod:`training.recipe` (``train RECIPE``, ``export``, ``evaluate``), imported only when run, so
the CLI starts without TensorFlow.
"""

from __future__ import annotations

import argparse

from streamer.errors import BackendError

#: these commands parse their own arguments
PASS_THROUGH = True


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model from ../shared/data style corpora (needs the training extra)",
                       description="Train a recipe (training/recipes/*.toml; python -m training.recipe) or, "
                                   "with speech|music, the shipped models (python -m training.train).",
                       add_help=False)
    t.add_argument("args", nargs=argparse.REMAINDER)
    for name, text in (("export", "export a recipe training run to ONNX (parity-checked, with its model card)"),
                       ("evaluate", "clip-level metrics of a recipe model on a held-out split")):
        x = sub.add_parser(name, help=text + " (needs the training extra)", description=text, add_help=False)
        x.add_argument("args", nargs=argparse.REMAINDER)


def run(args) -> int:
    try:
        if args.command == "train" and args.args[:1] in (["speech"], ["music"]):
            import importlib.util

            if "-h" not in args.args and "--help" not in args.args and not importlib.util.find_spec("tensorflow"):
                raise ImportError("No module named 'tensorflow'")  # say so before minutes of loading corpora
            from training.train import main as train_main
        else:
            from training.recipe import main as recipe_main

            def train_main(a):
                return recipe_main([args.command, *a])
        return int(train_main(args.args) or 0)
    except ImportError as exc:  # TensorFlow, tf2onnx, scikit-learn ... absent
        raise BackendError(f"training needs the training extra (pip install 'emotrack[training]', or "
                           f"scripts/setup.sh --test): {exc}") from None
