"""The live dashboard in a real browser: headless Chromium (Debian's) driven by selenium.

Starts `emotrack view`, opens the page, starts a replay, waits for the data to
arrive over server-sent events, checks that both curves have points and the
valence-arousal plane has its markers, and saves a screenshot (to
$EMOTRACK_SCREENSHOT_DIR as well when that is set).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from test_clients import REPO, audio, free_pair, interrupt, replay, start_viewer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                               else None)

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="headless browser test needs Debian's chromium and chromium-driver "
                                       "(apt-get install chromium chromium-driver; scripts/setup.sh --test does it)")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1600,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_js(driver, script, pred, timeout=30, what="page state"):
    end = time.monotonic() + timeout
    value = None
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if pred(value):
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; last value {value!r}")


DATASET = ("return [Number(document.body.dataset.speechPoints), Number(document.body.dataset.musicPoints), "
           "Number(document.body.dataset.vaMarkers), document.getElementById('conn').textContent, "
           "document.getElementById('stream').textContent]")


def test_dashboard_in_headless_chromium(tmp_path, tiny_models, browser):
    ep = free_pair()
    view, url = start_viewer(ep)
    try:
        browser.get(url)
        assert browser.title == "emotrack"
        wait_js(browser, DATASET, lambda v: v[3] in ("waiting", "disconnected"), what="page connected to viewer")
        ref = replay(tiny_models, audio(tmp_path / "a.wav", 30), ep, tmp_path / "ref.jsonl", "--name", "news")
        n_speech = sum('"emotion.speech"' in ln for ln in ref)
        n_music = sum('"emotion.music"' in ln for ln in ref)
        speech, music, markers, conn, stream = wait_js(
            browser, DATASET, lambda v: v[0] == n_speech and v[1] == n_music and v[2] == 2 and v[4] == "news",
            what="both curves, the VA markers and the stream name")
        wait_js(browser, DATASET, lambda v: v[3] == "end of stream", what="end of stream shown")
        # the drawing really happened: canvas pixels differ from the background
        painted = browser.execute_script(
            "const c = document.getElementById('tl-speech'), x = c.getContext('2d');"
            "const d = x.getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0) n++; return n;")
        assert painted > 1000
        texts = browser.execute_script("return document.body.innerText")
        assert "Speech" in texts and "Music" in texts and "received" in texts
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        if os.environ.get("EMOTRACK_SCREENSHOT_DIR"):
            shutil.copy(shot, Path(os.environ["EMOTRACK_SCREENSHOT_DIR"]) / "dashboard-test.png")
    finally:
        code, err = interrupt(view)
    assert code == 0, err


def test_dashboard_draws_tracked_and_raw_curves(tmp_path, tiny_models, browser):
    """With tracked fields in the messages (the default --smooth), each timeline draws the tracked
    curve strongly and the raw window values faintly, and the header shows the confidence. The input
    holds real speech (the example's first 30 s), since the tracked curve is as opaque as the presence
    detector says the source is present (a tone is not speech)."""
    import soundfile as sf

    x, sr = sf.read(str(REPO / "examples" / "heldout_mix.ogg"), dtype="float32", frames=30 * 16000)
    wav = tmp_path / "a.wav"
    sf.write(wav, x, sr)
    ep = free_pair()
    view, url = start_viewer(ep)
    try:
        browser.get(url)
        wait_js(browser, DATASET, lambda v: v[3] in ("waiting", "disconnected"), what="page connected to viewer")
        ref = replay(tiny_models, wav, ep, tmp_path / "ref.jsonl", "--name", "news")
        n_speech = sum('"emotion.speech"' in ln for ln in ref)
        assert n_speech and all('"tracked"' in ln for ln in ref if '"emotion.' in ln)
        state = ("const d = document.body.dataset; return [Number(d.speechTrackedPoints), Number(d.speechRawCurves), "
                 "Number(d.musicRawCurves), document.getElementById('now-speech').textContent]")
        tracked, raw_speech, raw_music, now = wait_js(
            browser, state, lambda v: v[0] == n_speech and v[1] == 2 and v[2] == 2,
            what="tracked points and both raw curves drawn")
        assert "% sure" in now and "window Q" in now
        # the raw curve is really on the canvas, fainter than the tracked one: sample valence-coloured pixels
        alphas = browser.execute_script(
            "const c = document.getElementById('tl-speech'), x = c.getContext('2d');"
            "const d = x.getImageData(0, 0, c.width, c.height).data; const a = new Set();"
            "for (let i = 0; i < d.length; i += 4) { if (d[i] < 120 && d[i + 2] > 150 && d[i + 3] > 0) a.add(d[i + 3]); }"
            "return [...a];")
        assert alphas and min(alphas) < 120 and max(alphas) > 200, alphas
    finally:
        code, err = interrupt(view)
    assert code == 0, err
