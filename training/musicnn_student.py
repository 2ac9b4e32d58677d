"""Issue 23's probe of a distilled student of the musicnn front end (not shipped).

A small CNN on the same 187 x 96 log-mel patch (:func:`streamer.musicnn.patch_mel`) regresses the
teacher's 200-d embedding (the cached patch embeddings of :mod:`training.musicnn_head`, standardised
per dimension, mean squared error).  It trains on the audio of the 4Q train/val artists and EMOPIA
train/val only, so the 4Q test artists (137 clips) are unheard by the student and by the heads that
score it; a 10-fold would need a student per fold (not done).

Student: five 2-D convolutions (8, 16, 32, 64, 128 channels; 5 x 5 stride 2, then 3 x 3 stride 2, 2,
2, 1), BatchNorm + ReLU, global mean and max pooling, dense 256, dense 200: ~10.3 MMAC per patch
against the front end's 1,398 MMAC.

    python -m training.musicnn_student data train      # log-mel patches + teacher targets
    python -m training.musicnn_student data test
    python -m training.musicnn_student train --budget-s 1200
    python -m training.musicnn_student evaluate --json docs/results/musicnn_student.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from streamer import musicnn as M

from . import musicnn_head as H
from .paths import cache_root

#: (channels, kernel, stride) of the convolutions
BLOCKS = ((8, 5, 2), (16, 3, 2), (32, 3, 2), (64, 3, 2), (128, 3, 1))


def work_dir() -> Path:
    d = cache_root() / "musicnn_student"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _items(which: str) -> tuple[list, dict]:
    """(items, teacher embeddings): "train" = 4Q train/val artists + EMOPIA train/val; "test" = 4Q test
    artists."""
    q4 = H._items("4q")
    embs = dict(H.patch_embeddings(q4))
    if which == "test":
        return [it for it in q4 if it.clip.split == "test"], embs
    em150 = H._items("emopia", ["train", "val"], H.EMOPIA_TRAIN_CLIPS)
    have = {it.key for it in em150}
    rest = [it for it in H._items("emopia", ["train", "val"]) if it.key not in have]
    embs.update(H.patch_embeddings(em150))
    embs.update(H.patch_embeddings(rest))
    return [it for it in q4 if it.clip.split != "test"] + em150 + rest, embs


def make_data(which: str, limit: int = 0, log=print) -> Path:
    """Log-mel patches (float16) and teacher embeddings of the grid patches of ``which``'s items."""
    from .experiments.protocols import ensure_audio

    items, embs = _items(which)
    items = items[:limit] if limit else items
    X, T = [], []
    for j, it in enumerate(items):
        ensure_audio(it.needs)
        x = np.asarray(it.audio(), np.float32)
        if x.size < M.PATCH_SAMPLES:
            x = np.pad(x, (0, M.PATCH_SAMPLES - x.size))
        starts = M.patch_starts(x.size)
        if len(starts) != len(embs[it.key]):
            raise RuntimeError(f"{it.key}: {len(starts)} patches but {len(embs[it.key])} cached embeddings")
        X += [M.patch_mel(x[s:s + M.PATCH_SAMPLES]).astype(np.float16) for s in starts]
        T.append(embs[it.key])
        if j % 200 == 0:
            log(f"{which}: {j}/{len(items)} items")
    out = work_dir() / f"{which}.npz"
    np.savez(out, X=np.stack(X), T=np.concatenate(T), n_items=len(items))
    return out


def build():
    import tensorflow as tf

    L = tf.keras.layers
    x0 = L.Input((M.N_FRAMES, M.N_MELS))
    x = L.BatchNormalization()(L.Reshape((M.N_FRAMES, M.N_MELS, 1))(x0))
    for ch, k, s in BLOCKS:
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(ch, k, strides=s, padding="same", use_bias=False)(x)))
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    return tf.keras.Model(x0, L.Dense(M.EMBED_DIM)(L.Dense(256, activation="relu")(x)))


def macs() -> int:
    """Multiply-accumulates per patch of :func:`build`'s network."""
    h, w, c, total = M.N_FRAMES, M.N_MELS, 1, 0
    for ch, k, s in BLOCKS:
        h, w = -(-h // s), -(-w // s)
        total += h * w * ch * k * k * c
        c = ch
    return int(total + 2 * c * 256 + 256 * M.EMBED_DIM)


def train(budget_s: float, seed: int = 0, log=print) -> Path:
    """Adam (2e-3, halved on a 2-epoch plateau), batch 64, until ``budget_s`` of training has passed."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(seed)
    d = np.load(work_dir() / "train.npz")
    X, T = d["X"].astype(np.float32), d["T"].astype(np.float32)
    mu, sd = T.mean(0), T.std(0) + 1e-6
    Tz = (T - mu) / sd
    perm = np.random.default_rng(seed).permutation(len(X))
    va, tr = perm[:len(X) // 20], perm[len(X) // 20:]
    model = build()
    model.compile(tf.keras.optimizers.Adam(2e-3), "mse")
    t0 = time.time()

    class Budget(tf.keras.callbacks.Callback):
        def on_epoch_end(self, ep, logs=None):
            log(f"epoch {ep} {time.time() - t0:.0f} s loss {logs['loss']:.4f} val {logs['val_loss']:.4f}")
            if time.time() - t0 > budget_s:
                self.model.stop_training = True

    model.fit(X[tr], Tz[tr], validation_data=(X[va], Tz[va]), batch_size=64, epochs=1000, verbose=0,
              callbacks=[Budget(), tf.keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.5)])
    out = work_dir() / "student.keras"
    model.save(out)
    np.savez(work_dir() / "target_norm.npz", mu=mu, sd=sd)
    return out


def evaluate(out_json: Path | None = None, log=print) -> dict:
    """Fidelity on the unheard 4Q test-artist patches, the heads (as :mod:`training.musicnn_head`)
    on student vs teacher embeddings for the 4Q test artists, and the student's ONNX cost."""
    import resource

    import tensorflow as tf

    model = tf.keras.models.load_model(work_dir() / "student.keras")
    nz = np.load(work_dir() / "target_norm.npz")
    emb = lambda X: model.predict(X.astype(np.float32), batch_size=256, verbose=0) * nz["sd"] + nz["mu"]  # noqa: E731
    q4 = H._items("4q")
    teacher = H.patch_embeddings(q4)
    trn = [it for it in q4 if it.clip.split != "test"]
    tst = [it for it in q4 if it.clip.split == "test"]
    dtr, dte = np.load(work_dir() / "train.npz"), np.load(work_dir() / "test.npz")
    ntr = sum(len(teacher[it.key]) for it in trn)
    s_tr, s_te, t_te = emb(dtr["X"][:ntr]), emb(dte["X"]), dte["T"]
    res = {"student_macs_per_patch": macs(), "front_end_macs_per_patch": 1398242384,
           "train_patches": int(len(dtr["X"])), "fidelity_4q_test_artist_patches": {
               "r2": round(float(1 - ((s_te - t_te) ** 2).sum() / ((t_te - t_te.mean(0)) ** 2).sum()), 4),
               "cosine": round(float(np.mean((s_te * t_te).sum(1) / np.linalg.norm(s_te, axis=1)
                                             / np.linalg.norm(t_te, axis=1))), 4)}}

    def split(S, items):
        out, o = {}, 0
        for it in items:
            n = len(teacher[it.key])
            out[it.key] = S[o:o + n]
            o += n
        return out

    student = {**split(s_tr, trn), **split(s_te, tst)}
    res["4q_test_artists"] = {}
    for name, E in (("teacher (musicnn front end)", teacher), ("student", student)):
        for spec in ("C=0.05", "mlp alpha=10.0"):
            r, _ = H.run_fold(trn, {"t": tst}, E, spec)
            res["4q_test_artists"][f"{name}, head {spec}"] = r["t"]["musicnn_head"]
            log(f"{name} {spec}: {r['t']['musicnn_head']}")
    import onnxruntime as ort
    import tf2onnx

    path = work_dir() / "student.onnx"
    tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, M.N_FRAMES, M.N_MELS), tf.float32,
                                                                     name="mel"),), opset=17, output_path=str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = {sess.get_inputs()[0].name: dte["X"][:1].astype(np.float32)}
    for _ in range(5):
        sess.run(None, x)
    r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    while time.perf_counter() - t0 < 3:
        sess.run(None, x)
        n += 1
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    res["student_onnx_ms_cpu_per_patch"] = round(1000 * (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n, 3)
    res["student_onnx_bytes"] = os.path.getsize(path)
    res["student_parameters"] = int(model.count_params())
    log(json.dumps({k: v for k, v in res.items() if k != "4q_test_artists"}))
    if out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(res, indent=1) + "\n")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="distilled student of the musicnn front end (probe)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("which", choices=("train", "test"))
    d.add_argument("--limit", type=int, default=0, help="first N items only (a smoke run)")
    sub.add_parser("train").add_argument("--budget-s", type=float, default=1200.0)
    sub.add_parser("evaluate").add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "data":
        print(make_data(a.which, a.limit))
    elif a.cmd == "train":
        print(train(a.budget_s))
    else:
        evaluate(a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
