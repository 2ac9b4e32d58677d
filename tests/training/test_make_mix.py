"""make_mix programmes: --speech emovo puts EMOVO's actors (never heard by the emotion models) over the
music of --split; the default keeps the split's RAVDESS speakers."""

import pytest

from conftest import DATA

pytestmark = pytest.mark.skipif(not ((DATA / "speech_emovo").is_dir() and (DATA / "midi_emopia").is_dir()),
                                reason="corpora not present")


def test_emovo_speech_over_validation_music():
    from training.data import corpora, make_mix

    val_music = {f"{corpora._FOLDER[c.corpus]}/{c.path}" for c in corpora.music_index()
                 if c.corpus == "emopia" and c.split == "val"}
    emovo = {c.group for c in make_mix.emovo_clips()}
    mix, truth = make_mix.build(40.0, 5.0, 3, "emopia", 0.0, split="val", speech_corpus="emovo")
    assert mix.size == 40 * make_mix.SR and truth["speech"] and truth["songs"]
    assert all(s["path"].startswith("speech_emovo/") and s["speaker"] in emovo for s in truth["speech"])
    assert all(s["path"] in val_music for s in truth["songs"])
    assert "EMOVO" in truth["protocol"]
    # the default: the split's RAVDESS actors (17-18 for val)
    _, plain = make_mix.build(20.0, 5.0, 3, "emopia", 0.0, split="val")
    assert all(s["path"].startswith("speech_ravdess/") for s in plain["speech"])
    with pytest.raises(SystemExit, match="ravdess or emovo"):
        make_mix.build(20.0, 5.0, 3, "emopia", 0.0, split="val", speech_corpus="tess")
