"""``emotrack predict FILE... --source speech|music``: one clip-level prediction per file."""

from __future__ import annotations

import json
import sys

from engines.argtypes import positive

from ..errors import InputError
from .common import load_models, stderr


def add_parser(sub) -> None:
    pr = sub.add_parser("predict", help="one clip-level prediction per file",
                        description="Predict valence, arousal and quadrant of whole clips.")
    pr.add_argument("files", nargs="+", metavar="FILE")
    pr.add_argument("--source", choices=("speech", "music"), required=True)
    pr.add_argument("--model", metavar="ONNX", default=None, help="model (default: the shipped one for --source)")
    pr.add_argument("--out", metavar="FILE.jsonl", help="write predictions here (default: stdout)")
    pr.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto")
    pr.add_argument("--threads", type=positive(int), default=None)


def run(args) -> int:
    from ..pipeline import check_model_features
    from ..predict import predict_file

    model = load_models(args, [args.source])[args.source]
    check_model_features(model)
    out = open(args.out, "w", buffering=1, encoding="utf-8") if args.out else sys.stdout
    failed = 0
    try:
        for path in args.files:
            try:
                res = predict_file(path, model, warn=lambda w: stderr(f"emotrack: warning: {w}"))
            except InputError as exc:
                stderr(f"emotrack: {exc}")
                failed += 1
                continue
            out.write(json.dumps(res) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if failed:
        if failed < len(args.files):
            stderr(f"emotrack: {failed} of {len(args.files)} files could not be read")
        return InputError.exit_code
    return 0
