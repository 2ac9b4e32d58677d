"""Separation, measured: SI-SDR and emotion accuracy with and without separation.

    python -m training.separation_eval [--separators none,builtin[,spleeter]] [--n 60]
                                       [--out docs/results/separation.json]

1. SI-SDR improvement (dB) of the speech and the music stem over the unprocessed
   mixture, on held-out 4 s mixtures (RAVDESS actors 19-24 over 4Q test artists
   and EMOPIA test songs, :func:`training.separator.mixture`) at 0, +5 and +10 dB
   speech-to-music ratio.  ``spleeter`` runs Spleeter's real code path with the
   weights in $MODEL_PATH/2stems; with a random-weight checkpoint (the only kind
   on machines without internet) its SI-SDR says nothing about Spleeter's
   quality, only its cost.
2. Emotion accuracy on seed 001's protocol at 0 dB (equal R128 loudness): the
   held-out speech clips each over a held-out music segment (speech model), the
   held-out music clips with held-out speech in every 4.5 s slot (music model);
   clip-level, as ``emotrack predict``; on clean audio, on the mixture (``none``),
   and on the separated stem of each separator.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engines.cards import default_model_path
from streamer.separation import make_separator, separate

from . import evaluate
from .data import corpora, mixing
from .evaluate import session
from .separator import mixture, si_sdr

SR = corpora.SR


def _separator(name: str):
    return make_separator(name)


def sisdr_table(name: str, speech, music, n: int, seconds: float = 4.0, ratios=(0.0, 5.0, 10.0),
                seed: int = 7) -> dict:
    """SI-SDR improvement per ratio for separator ``name`` (same mixtures for every separator)."""
    res = {}
    sep = _separator(name)
    t_sep, t_audio = 0.0, 0.0
    for r in ratios:
        rng = np.random.default_rng(seed + int(r * 10))
        di = {"speech": [], "music": []}
        for _ in range(n):
            mix, s, m, _, _ = mixture(rng, speech, music, int(seconds * SR), smr_db=r, gain=False)
            sep = _separator(name) if name != "spleeter" else sep  # spleeter: graph built once
            t0 = time.perf_counter()
            out = separate(mix, sep)
            t_sep += time.perf_counter() - t0
            t_audio += seconds
            for stem, ref in (("speech", s), ("music", m)):
                di[stem].append(si_sdr(out[stem], ref) - si_sdr(mix, ref))
        res[f"{r:+.0f} dB"] = {stem: round(float(np.mean(v)), 2) for stem, v in di.items()}
    res["realtime_factor_whole_clips"] = round(t_audio / t_sep, 1)
    return res


def _test_clips(max_clips: Optional[int] = None) -> dict:
    """Only the held-out clips (speech test speakers, music test songs), with audio."""
    speech = corpora.subset([c for c in corpora.speech_index() if c.split == "test"], max_clips)
    music = corpora.subset([c for c in corpora.music_index()
                            if c.split == "test" and c.corpus in ("4q", "emopia")], max_clips)
    corpora.load_audio(speech, use_cache=False)
    corpora.load_audio(music, use_cache=False)
    return {"speech": speech, "music": music}


def emotion_grid(separators: list[str], max_clips: Optional[int] = None, smr_db: float = 0.0,
                 seed: int = 3, separated_models: Optional[dict] = None) -> dict:
    """Clip-level quadrant metrics per (model, input): clean, mixed, separated."""
    data = _test_clips(max_clips)
    out = {}
    for kind in ("speech", "music"):
        cfg = mixing.CONFIGS[kind]
        tgt, oth = (data["speech"], data["music"]) if kind == "speech" else (data["music"], data["speech"])
        test = [c for c in tgt if c.split == "test" and c.corpus != "vgmidi"]
        others = [c for c in oth if c.split == "test" and c.corpus != "vgmidi"]
        sess = session(default_model_path(kind))
        mixes = {}
        rng = np.random.default_rng(seed)
        for c in test:
            mixes[c.path] = mixing.mix_eval(rng, cfg, c, others, smr_db)
        res = {"clean": evaluate.clip_level(sess, test, cfg, lambda c: c.audio)}
        for name in separators:
            if name == "none":
                res["mixed (none)"] = evaluate.clip_level(sess, test, cfg, lambda c: mixes[c.path])
                continue
            sep = _separator(name)
            stems = {}
            for c in test:
                if name != "spleeter":
                    sep = _separator(name)
                stems[c.path] = separate(mixes[c.path], sep)[kind]
            res[f"separated ({name})"] = evaluate.clip_level(sess, test, cfg, lambda c: stems[c.path])
            alt = (separated_models or {}).get(kind)
            if alt and name == "builtin":
                alt_sess = session(Path(alt))
                res["separated (builtin), model trained on builtin stems"] = evaluate.clip_level(
                    alt_sess, test, cfg, lambda c: stems[c.path])
                res["clean through builtin, model trained on builtin stems"] = evaluate.clip_level(
                    alt_sess, test, cfg, lambda c: separate(c.audio, sep)[kind])
        out[kind] = {k: {m: v[m] for m in ("n_clips", "quadrant_accuracy", "quadrant_macro_f1",
                                             "chance_quadrant_majority", "arousal_half_accuracy",
                                             "valence_half_accuracy") if m in v}
                     for k, v in res.items()}
        out[kind]["protocol"] = (f"{kind} model {default_model_path(kind).name}; test split ("
                                 f"{'RAVDESS actors 19-24' if kind == 'speech' else '4Q test artists + EMOPIA test'}"
                                 f"), {'one held-out music segment under each clip' if kind == 'speech' else 'held-out speech in every 4.5 s slot'}"
                                 f" at {smr_db:+.0f} dB (equal R128 loudness), clip-level, neutral excluded")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.separation_eval", description=__doc__.split("\n")[0])
    ap.add_argument("--separators", default="none,builtin")
    ap.add_argument("--n", type=int, default=60, help="mixtures per ratio for SI-SDR")
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--skip-emotion", action="store_true")
    ap.add_argument("--separated-speech-model", help="a speech model trained on builtin stems, scored too")
    ap.add_argument("--separated-music-model", help="a music model trained on builtin stems, scored too")
    ap.add_argument("--spleeter-emotion", action="store_true",
                    help="also run the emotion grid through spleeter (only meaningful with its "
                         "pretrained weights)")
    ap.add_argument("--out", default="docs/results/separation.json")
    ap.add_argument("--markdown", default=None, help="also write the docs/RESULTS.md section here")
    ap.add_argument("--from-json", default=None, help="only render --markdown from this JSON")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if a.from_json:
        Path(a.markdown or "/dev/stdout").write_text(markdown(json.loads(Path(a.from_json).read_text())))
        return 0
    seps = [s for s in a.separators.split(",") if s]
    data = _test_clips(a.max_clips)
    speech, music = data["speech"], data["music"]
    res = {"sisdr_improvement_db": {}, "notes": []}
    for name in seps:
        if name == "none":
            continue
        res["sisdr_improvement_db"][name] = {
            f"over {label}": sisdr_table(name, speech, [c for c in music if c.corpus in corp], a.n)
            for label, corp in (("4Q test songs (mostly sung)", ("4q",)),
                                ("EMOPIA test pieces (piano)", ("emopia",)))}
        print(name, json.dumps(res["sisdr_improvement_db"][name]), flush=True)
    if "spleeter" in seps:
        from streamer.separation.spleeter import find_model_dir

        random = (find_model_dir() / "RANDOM_WEIGHTS").exists()
        res["notes"].append("spleeter ran Spleeter's real code path with " + (
            "a RANDOM-WEIGHT checkpoint (pretrained weights cannot be downloaded on this machine): "
            "its SI-SDR measures nothing, only its cost" if random else "the weights in $MODEL_PATH/2stems"))
    if not a.skip_emotion:
        emo = [s for s in seps if s != "spleeter" or a.spleeter_emotion]
        alt = {k: v for k, v in (("speech", a.separated_speech_model), ("music", a.separated_music_model)) if v}
        res["emotion_seed001_0db"] = emotion_grid(emo, a.max_clips, separated_models=alt)
        print(json.dumps(res["emotion_seed001_0db"], indent=1), flush=True)
    p = Path(a.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(res, indent=2) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(markdown(res))
    return 0



def markdown(res: dict) -> str:
    """The separation section of docs/RESULTS.md from a separation_eval JSON."""
    out = ["## Separation (issue 4)", "",
           "Command: `python -m training.separation_eval --separators none,builtin,spleeter "
           "--markdown docs/results/separation.md` (MODEL_PATH pointing at a Spleeter 2stems folder). "
           "SI-SDR: held-out speakers (RAVDESS actors 19-24) over held-out songs (4Q test artists: "
           "mostly sung pop, whose vocals belong to the music stem; EMOPIA test pieces: piano), "
           "4 s mixtures at fixed speech-to-music ratios after R128 normalisation, through the "
           "streaming separators. Emotion: seed 001's protocol at 0 dB, clip level, as "
           "`emotrack predict` scores.", ""]
    si = res.get("sisdr_improvement_db", {})
    if si:
        out += ["### SI-SDR improvement over the mixture (dB, mean over held-out 4 s mixtures)", "",
                "| separator | music under the speech | speech-to-music ratio | speech stem | music stem | x real time (whole clips) |",
                "|---|---|---|---|---|---|"]
        for name, by_corpus in si.items():
            for corpus, table in by_corpus.items():
                for ratio, v in table.items():
                    if isinstance(v, dict):
                        out.append(f"| {name} | {corpus.replace('over ', '')} | {ratio} | {v['speech']:+.2f} | "
                                   f"{v['music']:+.2f} | {table.get('realtime_factor_whole_clips', '')} |")
        out += [""]
    for n in res.get("notes", []):
        out += [f"Note: {n}.", ""]
    grid = res.get("emotion_seed001_0db", {})
    if grid:
        out += ["### Emotion accuracy with and without separation (seed 001's protocol, 0 dB)", "",
                "| model | input | clips | 4Q accuracy | macro-F1 | majority chance | arousal half | valence half |",
                "|---|---|---|---|---|---|---|---|"]
        for kind, rows in grid.items():
            for name, m in rows.items():
                if isinstance(m, dict) and "quadrant_accuracy" in m:
                    out.append(f"| {kind} | {name} | {m['n_clips']} | {100 * m['quadrant_accuracy']:.1f} % | "
                               f"{m['quadrant_macro_f1']:.3f} | {100 * m['chance_quadrant_majority']:.1f} % | "
                               f"{100 * m['arousal_half_accuracy']:.1f} % | {100 * m['valence_half_accuracy']:.1f} % |")
        out += [""] + [f"- {kind}: {rows['protocol']}" for kind, rows in grid.items() if "protocol" in rows] + [""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
