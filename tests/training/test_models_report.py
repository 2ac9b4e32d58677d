"""docs/MODELS.md is the output of ``python -m training.reports.models`` on the shipped cards (no hand edits),
and the generator renders every shipped card, defaults first, whatever optional fields a card lacks."""

import json
import re
import sys

from conftest import REPO

from training.reports import models as report

PREAMBLE = REPO / "training" / "reports" / "models_preamble.md"


def _render(tmp_path, models=REPO / "engines" / "models"):
    out = tmp_path / "MODELS.md"
    assert report.main(["--models", str(models), "--preamble", str(PREAMBLE), "--out", str(out)]) == 0
    return out.read_text()


def test_models_md_is_the_generator_output(tmp_path):
    text = _render(tmp_path)
    doc = (REPO / "docs" / "MODELS.md").read_text()
    if doc != text:  # name the first differing line, so that a hand edit is easy to move into the preamble/notes
        a, b = doc.splitlines(), text.splitlines()
        i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise AssertionError(f"docs/MODELS.md differs from the generator at line {i + 1}: "
                             f"{a[i] if i < len(a) else '<end>'!r} vs {b[i] if i < len(b) else '<end>'!r}; edit "
                             "training/reports/models_preamble.md or training/reports/model_notes/ and rerun "
                             "python -m training.reports.models --preamble training/reports/models_preamble.md")


def test_the_generator_runs_without_tensorflow(tmp_path):
    """In a fresh interpreter (other tests of the suite may have loaded TensorFlow in this one)."""
    import subprocess

    code = ("import sys; from training.reports import models as r; "
            f"assert r.main(['--preamble', {str(PREAMBLE)!r}, '--out', {str(tmp_path / 'M.md')!r}]) == 0; "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "M.md").read_text() == (REPO / "docs" / "MODELS.md").read_text()


def test_every_shipped_card_has_a_section_defaults_first(tmp_path):
    from engines.cards import DEFAULT_MODELS

    text = _render(tmp_path)
    shipped = sorted((REPO / "engines" / "models").glob("*.json"))
    stems = {p.stem for p in shipped}
    assert {"presence", "music_musicnn", "musicnn_msd", "separator", "speech_lr", "music_dnn"} <= stems
    body = text.split(PREAMBLE.read_text().rstrip(), 1)[1]  # the card sections, after the preamble
    heads = re.findall(r"^## .*`([^`]+)`$", body, re.M)
    at = {}
    for p in shipped:
        cid = json.loads(p.read_text())["id"]
        assert heads.count(cid) == 1, cid
        at[p.stem] = heads.index(cid)
        assert f"card `engines/models/{p.stem}.json`" in text
    defaults = [s.removesuffix(".onnx") for s in DEFAULT_MODELS.values()]
    assert sorted(at[s] for s in defaults) == [0, 1]
    for s in defaults:
        cid = json.loads((REPO / "engines" / "models" / f"{s}.json").read_text())["id"]
        line = next(ln for ln in body.splitlines() if ln.startswith("## ") and f"`{cid}`" in ln)
        assert "(the default)" in line
    cnn = next(ln for ln in body.splitlines() if ln.startswith("## ") and "`emotrack-music-cnn-1`" in ln)
    assert "(the default)" not in cnn and "--music-model engines/models/music.onnx" in cnn
    assert at["separator"] == len(shipped) - 1


def test_cards_without_optional_fields_render(tmp_path, capsys):
    """A card without speed, activity, history or metrics loses those lines, not the page."""
    models = tmp_path / "models"
    models.mkdir()
    for stem in ("speech", "presence", "musicnn_msd", "separator"):
        card = json.loads((REPO / "engines" / "models" / f"{stem}.json").read_text())
        for k in ("speed", "activity", "parity", "training", "metrics", "cross_corpus", "latency_s"):
            card.pop(k, None)
        if stem == "speech":
            card["training_data"].pop("history", None)
            music = json.loads((REPO / "engines" / "models" / "music.json").read_text())
            for k in ("training_seconds", "seed", "activity", "speed"):  # history, not all the fields of a full card
                music.pop(k, None)
            (models / "music.json").write_text(json.dumps(music))
            (models / "music.onnx").write_bytes(b"")
        if stem == "separator":
            card["metrics"] = {"test": {}, "speed": {}}
            card["training"] = {"epochs_run": 1, "best_val_loss": 0.1, "minutes": 1, "seed": 1,
                                "parity_max_abs_diff": 0.0, "command": "x", "history": []}
        (models / f"{stem}.json").write_text(json.dumps(card))
        (models / f"{stem}.onnx").write_bytes(b"")
    (models / "orphan.json").write_text("{}")  # a card with no ONNX file beside it is not a shipped model
    (models / "broken.json").write_text("{not json")  # skipped with a one-line message, the rest is written
    (models / "broken.onnx").write_bytes(b"")
    out = tmp_path / "out.md"
    assert report.main(["--models", str(models), "--out", str(out), "--notes", str(tmp_path / "none")]) == 0
    text = out.read_text()
    assert "forward pass" not in text and "emotrack-presence-1" in text and "musicnn-msd-1" in text
    assert "`emotrack-speech-cnn-1-cal`" in text.splitlines()[2] and "`emotrack-music-cnn-1`" in text
    assert "orphan" not in text and "broken" not in text
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.json: not a JSON object" in err[0]
