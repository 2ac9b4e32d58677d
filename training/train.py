"""Train, export, check and document one model.

    python -m training.train speech|music [--epochs N] [--out engines/models]
                             [--max-clips N] [--windows N] [--seed S] [--threads T]

Windows are mixed on the fly (:mod:`training.data.mixing`) by a pool of worker
processes (forked before TensorFlow is imported) while the model trains on the
previous epoch's windows.  Early stopping on validation macro-F1 (window level,
non-neutral windows with the target source).  The best epoch is exported to
ONNX (tf2onnx, opset 17), compared with Keras on real validation windows
(max abs diff < 1e-4 or the run fails), timed, evaluated clip-level on the
held-out splits (:mod:`training.evaluate`) and described in a JSON card.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from streamer import taxonomy
from streamer.features import DEFAULT_PARAMS

from . import evaluate
from .data import corpora, mixing

_STATE: dict = {}
SPEECH_CORPUS_SHARE = {"ravdess": 0.7, "tess": 0.3}
MUSIC_CORPUS_SHARE = {"4q": 0.5, "emopia": 0.5}
LICENCES = {
    "ravdess": "RAVDESS (CC BY-NC-SA 4.0)", "tess": "TESS (CC BY-NC-ND 4.0)",
    "4q": "4Q Audio Emotion Dataset (Panda, Malheiro & Paiva 2018; AllMusic 30 s previews, research use)",
    "emopia": "EMOPIA 1.0 (CC BY-NC-SA 4.0)",
}


def sampling_probs(clips, share: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Clip sampling probabilities and quadrant loss weights (the mixing recipe).

    Corpus shares are fixed (``share``); inside that, each quadrant (and neutral)
    is sampled in proportion to the square root of its frequency (partial
    rebalancing, so that the rare RAVDESS calm = Q4 is not repeated too often);
    the quadrant loss weights then balance the remaining imbalance (mean 1 over
    the sampled non-neutral windows).
    """
    corp = np.array([c.corpus for c in clips])
    q = np.array([c.q_index for c in clips])
    p = np.zeros(len(clips))
    present = {k: v for k, v in share.items() if (corp == k).any()}
    tot = sum(present.values())
    for k, v in present.items():
        p[corp == k] = v / tot / (corp == k).sum()
    mass = {c: p[q == c].sum() for c in range(-1, 4) if (q == c).any()}
    for c, m in mass.items():
        p[q == c] *= np.sqrt(m) / m
    p /= p.sum()
    eff = np.array([p[q == c].sum() for c in range(4)])
    w = np.where(eff > 0, 1.0 / np.maximum(eff, 1e-12), 0.0)
    w = w / (w * eff).sum() * eff[eff > 0].sum()
    return p, w


def _gen(args):
    """Worker: one chunk of windows (uses the forked ``_STATE``)."""
    seed, n, split = args
    s = _STATE[split]
    return mixing.make_batch(seed, n, _STATE["cfg"], s["targets"], s["others"], s.get("p"))


def _concat(chunks):
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def spec_augment(rng: np.random.Generator, x: np.ndarray, fill: np.ndarray, n_time: int = 2,
                 max_time: float = 0.1, n_freq: int = 2, max_freq: int = 8) -> np.ndarray:
    """SpecAugment-style masks (in place) on training features [N, T, F, 3]: ``n_time`` time
    masks of up to ``max_time`` of the frames and ``n_freq`` masks of up to ``max_freq`` mel
    bands, filled with the per-channel training mean ``fill`` (0 after standardisation)."""
    n, t, f, _ = x.shape
    for i in range(n):
        for _ in range(n_time):
            w = int(rng.integers(0, int(max_time * t) + 1))
            s = int(rng.integers(0, t - w + 1))
            x[i, s:s + w] = fill
        for _ in range(n_freq):
            w = int(rng.integers(0, max_freq + 1))
            s = int(rng.integers(0, f - w + 1))
            x[i, :, s:s + w] = fill
    return x


def _targets(batch, qw: np.ndarray):
    q = batch["q"]
    onehot = np.zeros((len(q), 4), dtype=np.float32)
    onehot[q >= 0, q[q >= 0]] = 1.0
    y = {"quadrant": onehot, "va": batch["va"], "activity": batch["activity"][:, None]}
    sw = {"quadrant": np.where(q >= 0, qw[np.maximum(q, 0)], 0.0).astype(np.float32),
          "va": batch["va_mask"].astype(np.float32),
          "activity": np.ones(len(q), dtype=np.float32)}
    return y, sw


def split_clips(kind: str, data: dict) -> dict:
    """targets/others per split for ``kind``."""
    tgt, oth = (data["speech"], data["music"]) if kind == "speech" else (data["music"], data["speech"])
    out = {}
    for sp in ("train", "val", "test"):
        out[sp] = {"targets": [c for c in tgt if c.split == sp and c.corpus != "vgmidi"],
                   "others": [c for c in oth if c.split == sp and c.corpus != "vgmidi"]}
    out["xtest"] = [c for c in tgt if c.split == "xtest"]
    return out


def parse(argv):
    ap = argparse.ArgumentParser(prog="emotrack train", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["speech", "music"])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--out", default="engines/models")
    ap.add_argument("--max-clips", type=int, default=None,
                    help="at most N clips per corpus and split (quick test run)")
    ap.add_argument("--windows", type=int, default=None, help="training windows per epoch")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    ap.add_argument("--workers", type=int, default=2, help="window-mixing processes")
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--eval-only", action="store_true",
                    help="skip training: evaluate OUT/KIND.onnx and rewrite its card (the "
                         "standardisation is read from the graph; --train-record gives the "
                         "training facts of the run that made it)")
    ap.add_argument("--train-record", default=None, help="JSON with the training facts (eval-only)")
    ap.add_argument("--train-corpora", default=None,
                    help="comma list: train on these target corpora only (e.g. ravdess); the "
                         "left-out speech corpora become a cross-corpus test set")
    ap.add_argument("--separator", default="none", choices=["none", "builtin"],
                    help="train and evaluate on this separator's stem of every mixture (the "
                         "streaming pipeline must then run the same --separator)")
    ap.add_argument("--separator-model", default=None, help="builtin separator ONNX (default: the shipped one)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop training (keep the best epoch) after this many minutes")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; see the module docstring."""
    a = parse(sys.argv[1:] if argv is None else argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    t_start = time.time()
    quick = bool(a.max_clips)
    cfg = mixing.CONFIGS[a.kind]
    epochs = a.epochs or (30 if a.kind == "speech" else 25)
    n_win = a.windows or ((64 if quick else 3000) if a.kind == "speech" else (32 if quick else 1500))
    log = lambda *m: print(f"[{time.time() - t_start:7.1f}s]", *m, flush=True)

    mixing.use_separator(a.separator, a.separator_model)
    data = corpora.load(a.kind, a.max_clips)
    log(f"loaded {len(data['speech'])} speech and {len(data['music'])} music clips")
    sp = split_clips(a.kind, data)
    if a.train_corpora:
        keep = set(a.train_corpora.split(","))
        left_out = [c for c in sp["train"]["targets"] if c.corpus not in keep]
        sp["train"]["targets"] = [c for c in sp["train"]["targets"] if c.corpus in keep]
        if a.kind == "speech":
            sp["xtest"] = left_out  # whole corpora never trained on
        log(f"training on {sorted(keep)} only; {len(left_out)} clips left out")
    share = SPEECH_CORPUS_SHARE if a.kind == "speech" else MUSIC_CORPUS_SHARE
    p, qw = sampling_probs(sp["train"]["targets"], share)
    _STATE.update(cfg=cfg, train=dict(sp["train"], p=p), val=sp["val"], test=sp["test"])
    for k in ("train", "val", "test"):
        if not sp[k]["targets"] or not sp[k]["others"]:
            raise RuntimeError(f"empty {k} split for {a.kind}")

    ctx = mp.get_context("fork")
    pool = ctx.Pool(a.workers)  # forked before TensorFlow exists in this process
    if a.eval_only:
        rec = json.loads(Path(a.train_record).read_text()) if a.train_record else {}
        return finish(a, cfg, sp, data, pool, qw, share, rec, log, t_start)
    chunk = max(8, n_win // (4 * a.workers))

    def epoch_job(e):
        jobs, left, k = [], n_win, 0
        while left > 0:
            jobs.append((a.seed * 1_000_003 + e * 1009 + k, min(chunk, left), "train"))
            left -= chunk
            k += 1
        return pool.map_async(_gen, jobs)

    pending = epoch_job(0)
    n_val = max(32, 2 * len(sp["val"]["targets"]))
    val = _concat(pool.map(_gen, [(a.seed * 7 + 99_991 + k, n_val // 4 + 1, "val") for k in range(4)]))
    train0 = _concat(pending.get())
    pending = epoch_job(1) if epochs > 1 else None
    log(f"epoch 0 windows {train0['x'].shape}, val windows {val['x'].shape}")

    feats = train0["x"]
    mean = feats.mean(axis=(0, 1, 2)).astype(np.float64)
    std = feats.std(axis=(0, 1, 2)).astype(np.float64)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    from .model import build, describe
    from .export import check_parity, export_onnx, op_types, session, time_forward, write_card

    model = build(cfg.n_frames, mean, std, seed=a.seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss={"quadrant": "categorical_crossentropy", "va": "mse",
                        "activity": "binary_crossentropy"},
                  loss_weights={"quadrant": 1.0, "va": 0.5, "activity": 0.5})
    yv, swv = _targets(val, qw)
    vmask = val["q"] >= 0
    best = (-1.0, None, -1)
    history = []
    batch = train0
    aug_rng = np.random.default_rng(a.seed + 17)
    lr, since_best = 1e-3, 0
    for e in range(epochs):
        spec_augment(aug_rng, batch["x"], mean.astype(np.float32))
        y, sw = _targets(batch, qw)
        h = model.fit(batch["x"], y, sample_weight=sw, batch_size=64, epochs=1, verbose=0, shuffle=True)
        out = model.predict(val["x"], batch_size=128, verbose=0)
        pred = out["quadrant"].argmax(1)
        f1 = evaluate.macro_f1(val["q"][vmask], pred[vmask])
        vloss = model.evaluate(val["x"], yv, sample_weight=swv, batch_size=128, verbose=0,
                               return_dict=True)["loss"]
        history.append({"epoch": e + 1, "lr": lr, "train_loss": round(float(h.history["loss"][-1]), 4),
                        "val_loss": round(float(vloss), 4), "val_macro_f1": round(f1, 4)})
        log(history[-1])
        if f1 > best[0]:
            best, since_best = (f1, model.get_weights(), e + 1), 0
        else:
            since_best += 1
            if since_best % 3 == 0:  # halve the learning rate after 3 epochs without gain
                lr *= 0.5
                model.optimizer.learning_rate.assign(lr)
        if e + 1 - best[2] >= a.patience:
            log("early stop")
            break
        if a.max_minutes and time.time() - t_start > 60 * a.max_minutes:
            log("time budget reached")
            break
        if e + 1 < epochs:
            batch = _concat(pending.get())
            pending = epoch_job(e + 2) if e + 2 < epochs else None
    model.set_weights(best[1])
    train_s = time.time() - t_start
    log(f"best epoch {best[2]} val macro-F1 {best[0]:.4f}")
    if pending is not None:
        pending.wait()
    probe = val["x"][:8].copy()
    del batch, train0, val, feats, y, sw, yv, swv, pending
    import gc
    gc.collect()

    out_dir = Path(a.out)
    onnx_path = export_onnx(model, cfg.n_frames, out_dir / f"{a.kind}.onnx")
    parity = check_parity(model, onnx_path, probe)
    rec = {"parameters": int(model.count_params()), "architecture": describe(model),
           "parity": parity, "history": history, "best_epoch": best[2],
           "training_seconds": round(train_s, 1), "windows_per_epoch": n_win,
           "std_computed_on": n_win}
    tf.keras.backend.clear_session()
    del model
    gc.collect()
    return finish(a, cfg, sp, data, pool, qw, share, rec, log, t_start)


def standardisation_from_onnx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) recovered from the graph's first Mul/Add constants (x * 1/std + -mean/std)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    node = consumers["features"][0]
    while node.op_type != "Mul":
        node = consumers[node.output[0]][0]
    scale = next(init[i] for i in node.input if i in init).reshape(-1)
    add = consumers[node.output[0]][0]
    shift = next(init[i] for i in add.input if i in init).reshape(-1)
    std = 1.0 / scale.astype(np.float64)
    return -shift.astype(np.float64) * std, std


def finish(a, cfg, sp, data, pool, qw, share, rec, log, t_start) -> int:
    """Time, evaluate (clip level, held-out) and write the card of ``OUT/KIND.onnx``."""
    from engines.models import sha256_of as sha256

    from .export import op_types, session, time_forward, write_card

    out_dir = Path(a.out)
    onnx_path = out_dir / f"{a.kind}.onnx"
    mean, std = standardisation_from_onnx(onnx_path)
    timing = time_forward(onnx_path, cfg.n_frames)
    log(f"{onnx_path} ({onnx_path.stat().st_size} bytes), {timing}")
    history = rec.get("history", [])
    parity = rec.get("parity")
    best = (None, None, rec.get("best_epoch"))
    n_win = rec.get("windows_per_epoch")
    train_s = rec.get("training_seconds")
    quick = bool(a.max_clips)
    describe_text = rec.get("architecture")
    n_params = rec.get("parameters")
    sess = session(onnx_path, threads=a.threads)
    rng = np.random.default_rng(12345)
    te = sp["test"]
    metrics, cross = {}, {}
    if a.kind == "speech":
        rav = [c for c in te["targets"] if c.corpus == "ravdess"]
        metrics["ravdess_test_actors_19_24_clean"] = evaluate.clip_level(
            sess, rav, cfg, lambda c: c.audio, pool.imap)
        mixes = {c.path: mixing.mix_eval(rng, cfg, c, [o for o in te["others"] if o.corpus == "4q"]
                                         or te["others"], 0.0) for c in rav}
        metrics["ravdess_test_actors_19_24_mixed_4q_test_0dB"] = evaluate.clip_level(
            sess, rav, cfg, lambda c: mixes[c.path], pool.imap)
        with_ = [c.audio for c in rav]
        for corpus in sorted({c.corpus for c in sp["xtest"]}):
            xc = [c for c in sp["xtest"] if c.corpus == corpus]
            cross[f"{corpus}_all_never_trained_on_clean"] = evaluate.clip_level(
                sess, xc, cfg, lambda c: c.audio, pool.imap)
            xmix = {c.path: mixing.mix_eval(rng, cfg, c, [o for o in te["others"] if o.corpus == "4q"]
                                            or te["others"], 0.0) for c in xc}
            cross[f"{corpus}_all_never_trained_on_mixed_4q_test_0dB"] = evaluate.clip_level(
                sess, xc, cfg, lambda c: xmix[c.path], pool.imap)
        if not sp["xtest"]:
            cross["note"] = ("TESS is entirely in the training set (2 speakers only), so no held-out "
                         "TESS or other-corpus speech numbers exist; the RAVDESS test actors are "
                         "the only speaker-independent held-out speech.")
    else:
        for corpus, name in (("4q", "4q_test_artists"), ("emopia", "emopia_official_test")):
            cl = [c for c in te["targets"] if c.corpus == corpus]
            if not cl:
                continue
            metrics[f"{name}_clean"] = evaluate.clip_level(sess, cl, cfg, lambda c: c.audio, pool.imap)
            spk = [o for o in te["others"] if o.corpus == "ravdess"] or te["others"]
            mixes = {c.path: mixing.mix_eval(rng, cfg, c, spk, 0.0) for c in cl}
            metrics[f"{name}_with_test_speech_0dB_4.5s_slots"] = evaluate.clip_level(
                sess, cl, cfg, lambda c: mixes[c.path], pool.imap)
        if sp["xtest"]:
            cross["vgmidi_labelled_never_trained_on"] = evaluate.clip_level(
                sess, sp["xtest"], cfg, lambda c: c.audio, pool.imap)
        with_ = [c.audio for c in te["targets"] if c.corpus == "4q"]
    activity = evaluate.activity_report(sess, cfg, with_, te["others"], rng, pool.imap)
    pool.close()
    log(json.dumps(metrics, indent=1)[:3000])

    n_train_windows = (n_win or 0) * len(history)
    corp_counts = {}
    for c in sp["train"]["targets"] + sp["train"]["others"]:
        corp_counts.setdefault(f"{c.corpus}", {}).setdefault("train", 0)
        corp_counts[c.corpus]["train"] += 1
    for s in ("val", "test"):
        for c in sp[s]["targets"] + sp[s]["others"]:
            corp_counts.setdefault(c.corpus, {}).setdefault(s, 0)
            corp_counts[c.corpus][s] += 1
    for c in sp["xtest"]:
        corp_counts.setdefault(c.corpus, {}).setdefault("xtest", 0)
        corp_counts[c.corpus]["xtest"] += 1
    used = sorted({c.corpus for c in data["speech"] + data["music"] if c.corpus != "vgmidi"})
    artists = {}
    for c in data["music"]:
        if c.corpus == "4q":
            artists.setdefault(c.split, set()).add(c.group)
    card = {
        "id": f"emotrack-{a.kind}-cnn-1" + ("-quicktest" if quick else ""),
        "source": a.kind,
        "task": (f"{a.kind} emotion: Russell quadrant probabilities (Q1..Q4), valence/arousal "
                 f"(tanh, trained on quadrant sign targets) and {a.kind} activity per "
                 f"{cfg.window_s:g} s window"),
        "onnx": onnx_path.name,
        "onnx_sha256": sha256(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "onnx_opset": 17,
        "onnx_op_types": op_types(onnx_path),
        "window_s": cfg.window_s,
        "hop_s": cfg.hop_s,
        "inputs": [{"name": "features", "dtype": "float32", "shape": ["N", cfg.n_frames, 64, 3],
                    "description": "streamer.features.extract of a 16 kHz mono window "
                                   "(log-mel dB, delta, delta-delta after R128 normalisation); "
                                   "standardisation is inside the graph"}],
        "outputs": [
            {"name": "quadrant", "dtype": "float32", "shape": ["N", 4], "activation": "softmax",
             "labels": list(taxonomy.QUADRANTS)},
            {"name": "va", "dtype": "float32", "shape": ["N", 2], "activation": "tanh",
             "labels": ["valence", "arousal"]},
            {"name": "activity", "dtype": "float32", "shape": ["N", 1], "activation": "sigmoid",
             "labels": [f"{a.kind}_activity"]},
        ],
        "features": DEFAULT_PARAMS.to_dict(),
        "separator": _separator_record(a),
        "standardisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std],
                            "computed_on": f"the {rec.get('std_computed_on')} training windows of "
                                           "epoch 1 (all frames and mel bands, per channel); "
                                           "read back from the ONNX graph constants"},
        "architecture": describe_text,
        "parameters": n_params,
        "training_data": {
            "corpora": [LICENCES[c] for c in used],
            "clip_counts": corp_counts,
            "windows_per_epoch": n_win,
            "epochs_run": len(history),
            "best_epoch": best[2],
            "windows_seen": n_train_windows,
            "mixing_recipe": mixing.__doc__.strip(),
            "sampling": (f"target clips drawn with corpus shares {share}, each quadrant (and "
                         "neutral) by the square root of its frequency; quadrant loss weights "
                         f"{dict(zip(taxonomy.QUADRANTS, [round(float(x), 3) for x in qw]))} "
                         "balance the rest; neutral speech: quadrant loss masked, VA target origin"),
            "loss": "categorical CE (masked, class-weighted) + 0.5 MSE VA (masked) + 0.5 BCE activity",
            "optimiser": ("Adam 1e-3, batch 64, learning rate halved after every 3 epochs "
                          f"without a better validation macro-F1; early stopping patience {a.patience}"),
            "augmentation": ("speed perturbation U[0.9, 1.1] of the target clip (p "
                             f"{cfg.p_speed}), random gain/offset/noise/SMR (mixing recipe), "
                             "SpecAugment masks: 2 time masks <= 10 % of frames, 2 mel masks "
                             "<= 8 bands, filled with the training mean"),
            "history": history,
            **({"note": rec["note"]} if rec.get("note") else {}),
        },
        "protocol": {
            "speech": ("TEST = RAVDESS actors 19-24 (speaker-independent); VALIDATION = RAVDESS "
                       "actors 17-18 (early stopping on window-level macro-F1); TRAIN = RAVDESS "
                       "actors 1-16 + all TESS"),
            "music": ("4Q grouped by artist: sorted artists shuffled with numpy default_rng("
                      f"{corpora.SPLIT_SEED}), first 20 % TEST, next 10 % VAL, rest TRAIN "
                      "(training.data.corpora.split_4q_artists); EMOPIA official_split column; "
                      "VGMIDI labelled = cross-corpus test only"),
            "mixing": ("the other source comes from the same split only (train with train, val "
                       "with val, test with test speakers/songs)"),
            "4q_test_artists": sorted(artists.get("test", [])),
            "4q_val_artists": sorted(artists.get("val", [])),
            "clip_level_evaluation": evaluate.__doc__.strip(),
        },
        "metrics": metrics,
        "activity": activity,
        "cross_corpus": cross,
        "speed": {"forward_pass": timing, "keras_onnx_max_abs_diff": parity},
        "licence": ("trained on " + ", ".join(LICENCES[c] for c in used)
                    + ": research / non-commercial use only"),
        "seed": a.seed,
        "training_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": "python -m training.train " + " ".join(a.argv),
    }
    write_card(card, out_dir / f"{a.kind}.json")
    log(f"wrote {out_dir / (a.kind + '.json')}")
    return 0


def _separator_record(a) -> dict:
    """Which separator's stem the model was trained on (none: the mix)."""
    if a.separator == "none":
        return {"name": "none"}
    from engines.models import sha256_of
    from streamer.separation import DEFAULT_SEPARATOR_MODEL

    path = Path(a.separator_model) if a.separator_model else DEFAULT_SEPARATOR_MODEL
    return {"name": a.separator, "model": path.name, "onnx_sha256": sha256_of(path)}


if __name__ == "__main__":
    raise SystemExit(main())
