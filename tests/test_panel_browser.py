"""The control panel end to end in a real browser: headless Chromium (Debian's ``chromium``
package, installed by .ci/run) driven by Playwright, against ``warpcam --panel`` running as its
own process on a shared video with a video file output.

The page's controls are moved like a user does (keys on the smile and gaze pitch sliders, a
click on the gaze switch); what changed is asserted from the pipeline: its live settings (the
server's /api/state reads ``pipeline.settings``) and the frames it wrote to the output file,
compared with the input frame by frame. Then a preset is saved (the TOML file in the temporary
config folder is read back), the page reloaded and the preset loaded back; a value typed out
of range is refused with a message on the page. The screenshot goes to
``$WARPCAM_PANEL_SCREENSHOT`` when set (``docs/panel.png`` in the README was taken so).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests import realdata

pytest.importorskip("aiohttp")
playwright_api = pytest.importorskip("playwright.sync_api")

VIDEO = "astronaut_sway.mp4"  # 540 frames at 30 fps: 18 s paced by the panel; public domain,
# so the screenshot may go in the README (the shared videos' pictures may not)


def chromium_path() -> str:
    for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "",
              shutil.which("chromium-browser") or ""):
        if p and os.path.exists(p):
            return p
    pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install "
                "chromium)")


class Warpcam:
    """``warpcam --panel`` as a child process; ``url`` once it printed it."""

    def __init__(self, argv, env):
        self.proc = subprocess.Popen([sys.executable, "-m", "warpcam.realtime.cli", *argv],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines = []
        self.url = None
        self._got = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            m = re.search(r"control panel at (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
            if m:
                self.url = m.group(1)
                self._got.set()
        self._got.set()

    def wait_url(self, timeout=60):
        self._got.wait(timeout)
        assert self.url, "no panel URL printed:\n" + "\n".join(self.lines)
        return self.url


def state(url) -> dict:
    """The pipeline's state as the server reports it (frames, live settings)."""
    base, token = url.split("/?token=")
    req = urllib.request.Request(base + "/api/state", headers={"X-Warpcam-Token": token})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def wait_for(url, pred, what, timeout=20.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = state(url)
        if pred(s):
            print(f"{time.time():.2f} {what}: frame {s['frames']}", flush=True)
            return s
        time.sleep(0.05)
    raise AssertionError(f"the pipeline never reached: {what}; last state {s}")


def test_panel_in_chromium(tmp_path):
    import av

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), OMP_NUM_THREADS="1")
    out = tmp_path / "out.mp4"
    presets_file = tmp_path / "config" / "warpcam" / "presets.toml"
    shot = Path(os.environ.get("WARPCAM_PANEL_SCREENSHOT") or tmp_path / "panel.png")
    clip = realdata.astronaut_clip(tmp_path / VIDEO)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True)
        wc = Warpcam(["--input", str(clip), "--output", str(out), "--panel",
                      "--quiet"], env)
        try:
            url = wc.wait_url()
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=15000)
            page.wait_for_selector("#live[src^='blob:']", timeout=15000)  # a frame came
            assert page.inner_text("#input").endswith(VIDEO)
            # generated controls: a slider per numeric setting, a switch per bool one
            for sel in ("#s-smile-strength", "#s-gaze-pitch_deg", "#s-gaze-yaw_deg",
                        "#s-gaze-camera_offset_cm", "#s-gaze-eye_contact", "#s-gaze-enabled",
                        "#s-keep_smiling-strength"):
                assert page.locator(sel).count() == 1, sel
            s = wait_for(url, lambda s: s["frames"] >= 15, "15 frames")
            assert s["settings"]["smile"]["strength"] == 0.0
            phases = {"base": state(url)["frames"]}  # frames before the first key press

            # 1. the smile slider, moved with the keyboard: 0 -> 0.8
            page.focus("#s-smile-strength")
            for _ in range(8):
                page.keyboard.press("ArrowRight")
            s = wait_for(url, lambda s: abs(s["settings"]["smile"]["strength"] - 0.8) < 1e-9,
                         "smile 0.8")
            phases["smile"] = s["frames"]
            wait_for(url, lambda s: s["frames"] >= phases["smile"] + 30, "30 frames")
            # 2. gaze pitch slider up by 15 deg, then 3. the gaze switch off
            phases["smile_end"] = state(url)["frames"]
            page.focus("#s-gaze-pitch_deg")
            for _ in range(15):
                page.keyboard.press("ArrowRight")
            s = wait_for(url, lambda s: s["settings"]["gaze"]["pitch_deg"] == 15.0, "pitch 15")
            phases["pitch"] = s["frames"]
            wait_for(url, lambda s: s["frames"] >= phases["pitch"] + 30, "30 frames")
            page.click("#effect-gaze h2 .switch")
            s = wait_for(url, lambda s: s["settings"]["gaze"]["enabled"] is False, "gaze off")
            phases["off"] = s["frames"]
            wait_for(url, lambda s: s["frames"] >= phases["off"] + 30, "30 frames")
            phases["end"] = state(url)["frames"]

            # before/after: the input's picture, then the output's again
            page.click("#view .switch")
            playwright_api.expect(page.locator("#which")).to_have_text("before", timeout=5000)
            page.click("#view .switch")
            playwright_api.expect(page.locator("#which")).to_have_text("after", timeout=5000)

            # a hidden tab asks for no pictures (the pipeline's hook then copies nothing)
            assert state(url)["viewers"] == 1
            page.evaluate("""() => {
                Object.defineProperty(document, "hidden", {value: true, configurable: true});
                document.dispatchEvent(new Event("visibilitychange")); }""")
            wait_for(url, lambda s: s["viewers"] == 0, "no viewer while hidden", timeout=5)
            page.evaluate("""() => {
                Object.defineProperty(document, "hidden", {value: false, configurable: true});
                document.dispatchEvent(new Event("visibilitychange")); }""")
            wait_for(url, lambda s: s["viewers"] == 1, "a viewer again", timeout=5)

            # a value typed out of range: refused by the server, the message on the page
            page.fill("#n-smile-strength", "5")
            page.press("#n-smile-strength", "Enter")
            page.wait_for_selector("#message:not([hidden])", timeout=5000)
            assert "within [-1, 1]" in page.inner_text("#message")
            assert state(url)["settings"]["smile"]["strength"] == 0.8

            # presets: save, change, reload the page, load it back
            page.fill("#preset-name", "demo")
            page.click("#preset-save")
            playwright_api.expect(page.locator("#preset-list")).to_have_value("demo")
            saved = tomllib.loads(presets_file.read_text())["presets"]["demo"]
            assert saved["smile"]["strength"] == 0.8 and saved["gaze"]["enabled"] is False
            page.focus("#s-smile-strength")
            for _ in range(3):
                page.keyboard.press("ArrowLeft")
            wait_for(url, lambda s: abs(s["settings"]["smile"]["strength"] - 0.5) < 1e-9,
                     "smile 0.5")
            page.reload()
            page.wait_for_selector("body[data-ready='1']", timeout=15000)
            page.select_option("#preset-list", "demo")
            page.click("#preset-load")
            s = wait_for(url, lambda s: abs(s["settings"]["smile"]["strength"] - 0.8) < 1e-9,
                         "the preset loaded back")
            assert s["settings"]["gaze"]["pitch_deg"] == 15.0 and not s["settings"]["gaze"][
                "enabled"]
            page.wait_for_selector("#live[src^='blob:']", timeout=15000)  # a frame came
            page.wait_for_timeout(1200)  # a state message: the timings table is filled
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(shot), full_page=True)
            assert state(url)["running"]  # all of it while the video was still playing
        finally:
            browser.close()
        assert wc.proc.wait(timeout=90) == 0, "\n".join(wc.lines)
        assert not [ln for ln in wc.lines if "Traceback" in ln or "error" in ln.lower()], wc.lines
    assert shot.stat().st_size > 20_000

    # --- the output file, frame by frame against the input ------------------------------------
    def frames(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]

    src, dst = frames(clip), frames(out)
    assert len(dst) == len(src) == 540
    changed = [np.abs(d.astype(np.int16) - s).max(axis=2) > 24
               for s, d in zip(src, dst, strict=True)]

    def rows(a, b):  # frames with the settings of one phase (the change is at most one late)
        return [changed[i] for i in range(a + 2, b)]

    base = rows(0, phases["base"])
    smile = rows(phases["smile"], phases["smile_end"])
    pitch = rows(phases["pitch"], phases["off"])
    off = rows(phases["off"], phases["end"])
    assert min(len(base), len(smile), len(pitch), len(off)) >= 10, phases
    n = lambda ms, sl=slice(None): float(np.mean([m[sl].sum() for m in ms]))  # noqa: E731
    # pixels changed by more than 24 grey levels per frame (the codec alone changes a few)
    ys = np.concatenate([np.nonzero(m)[0] for m in smile])
    y_mouth = float(np.median(ys))
    eyes = slice(0, int(y_mouth) - 40)
    figures = dict(base=n(base), smile=n(smile), pitch=n(pitch), off=n(off),
                   base_eyes=n(base, eyes), smile_eyes=n(smile, eyes), pitch_eyes=n(pitch, eyes),
                   off_eyes=n(off, eyes), y_mouth=y_mouth, phases=phases)
    print("changed pixels per frame:", figures)
    # the smile: many more changed pixels, in the lower face (the mouth: below the eyes)
    assert n(smile) > 20 * max(n(base), 5) and n(smile) - n(base) > 200, figures
    assert y_mouth > src[0].shape[0] * 0.5, figures
    # gaze pitch +15: the eyes change too, above the mouth; the gaze switch off: they are back
    assert n(pitch, eyes) > 10 * max(n(smile, eyes), 10), figures
    assert n(off, eyes) < 0.1 * n(pitch, eyes), figures
    assert n(off) > 0.5 * n(smile), figures  # the smile stays on
