"""The effect seam: a new effect plugs in through the registry alone (no edit to the pipeline or
the CLI), and live settings change from another thread as a whole, at a frame boundary."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import pytest

from tests.realdata import astronaut_bgr, video
from warpcam.core.types import WarpJob
from warpcam.realtime import cli
from warpcam.realtime.effects import (Effect, EffectSpec, LiveSettings, SettingsError,
                                      build_effects, register, registered, setting, unregister,
                                      validate)
from warpcam.realtime.effects.gaze import GazeSettings
from warpcam.realtime.effects.smile import SmileSettings


# ------------------------------------------------------------------------------------------------
# a toy effect, defined here and registered at run time
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NoseShiftSettings:
    effect_name: ClassVar[str] = "noseshift"

    shift_px: float = setting(0.0, lo=-8.0, hi=8.0, unit="px", step=1.0,
                              help="move the nose tip sideways by this many pixels")

    def __post_init__(self):
        validate(self)


class NoseShift(Effect):
    """Shifts a 24 x 24 px box around the nose tip sideways (a constant backward flow)."""

    name = "noseshift"

    def jobs(self, frame, faces, t=0.0, crops=None):
        s = self.settings.get()
        if abs(s.shift_px) < 1e-6:
            return []
        out = []
        for f in faces:
            x, y = f.landmarks[1]
            a = np.array([[1.0, 0.0, x - 11.5], [0.0, 1.0, y - 11.5]])
            flow = np.zeros((24, 24, 2), np.float32)
            flow[..., 0] = -s.shift_px
            out.append(WarpJob(crop_to_frame=a, flow=flow, alpha=np.ones((24, 24), np.float32),
                               kind="nose", face_id=f.track_id))
        return out


@pytest.fixture
def toy_effect():
    spec = register(EffectSpec(name="noseshift", settings_cls=NoseShiftSettings,
                               factory=lambda live, options: NoseShift(live), order=50,
                               help="toy effect of the registry test"))
    try:
        yield spec
    finally:
        unregister("noseshift")


def test_builtin_effects_are_registered_in_order():
    assert [s.name for s in registered()][:2] == ["gaze", "smile"]


def test_a_registered_effect_appears_in_help_and_runs_in_a_cli_job(toy_effect, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert "--noseshift-shift-px" in help_text and "move the nose tip sideways" in help_text

    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), astronaut_bgr())
    out_plain, out_toy = tmp_path / "plain.png", tmp_path / "toy.png"
    assert cli.main(["--input", str(photo), "--output", str(out_plain), "--quiet"]) == 0
    assert cli.main(["--input", str(photo), "--output", str(out_toy), "--quiet",
                     "--noseshift-shift-px", "4"]) == 0
    a = cv2.imread(str(out_plain)).astype(int)
    b = cv2.imread(str(out_toy)).astype(int)
    changed = np.argwhere(np.abs(a - b).sum(-1) > 0)
    assert len(changed) > 50  # the nose moved ...
    h = changed.max(0) - changed.min(0)
    assert (h <= 26).all()  # ... and nothing beyond the toy's 24 px box changed

    # a value out of the declared range is refused before any work, naming the flag
    with pytest.raises(SystemExit) as e:
        cli.main(["--input", str(photo), "--output", str(tmp_path / "x.png"),
                  "--noseshift-shift-px", "9"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("warpcam: error: --noseshift-shift-px must be within [-8, 8]")
    assert not (tmp_path / "x.png").exists()


def test_unknown_effect_is_gone_after_unregister(toy_effect):
    unregister("noseshift")
    assert "noseshift" not in [s.name for s in registered()]
    register(toy_effect)  # the fixture unregisters again


# ------------------------------------------------------------------------------------------------
# live settings
# ------------------------------------------------------------------------------------------------

def test_live_settings_validate_before_applying():
    live = LiveSettings(SmileSettings(0.2))
    with pytest.raises(SettingsError, match=r"smile.strength must be within \[-1, 1\], got 1.5"):
        live.update(strength=1.5)
    with pytest.raises(SettingsError, match="finite"):
        live.update(strength=float("nan"))
    with pytest.raises(SettingsError, match="unknown setting"):
        live.update(strenght=0.5)
    with pytest.raises(SettingsError, match="expected SmileSettings"):
        live.set(GazeSettings())
    assert live.get() == SmileSettings(0.2) and live.version == 0
    seen = []
    live.subscribe(seen.append)
    live.update(strength=-0.4)
    assert live.get().strength == -0.4 and live.version == 1 and seen == [SmileSettings(-0.4)]


def test_settings_changed_from_another_thread_apply_whole_at_a_frame(static_tracker):
    """A file job runs while another thread flips the gaze between two redirections that differ
    in both fields, and the smile between two strengths: every frame's jobs show one complete
    setting (never pitch of one and yaw of the other), and both values are seen."""
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.realtime.io import NullSink
    from warpcam.realtime.io import open_source
    from warpcam.realtime.tracker import FaceTracker

    path = video("looks_down_blinks_512.mp4")
    effects = build_effects(gaze=GazeSettings(pitch_deg=8.0, yaw_deg=8.0),
                            smile=SmileSettings(0.3))
    seen_gaze, seen_smile = [], []

    def on_frame(frame, out, faces, jobs):
        gz = {j.meta["delta_deg"] for j in jobs if j.kind.startswith("eye")}
        sm = {round(j.meta["strength"] / max(j.meta["fade"], 1e-9), 6) for j in jobs
              if j.kind == "mouth"}
        seen_gaze.append(gz)
        seen_smile.append(sm)

    stop = threading.Event()

    def flipper(pipe):
        k = 0
        while not stop.is_set():
            v = 8.0 if k % 2 else -8.0
            pipe.settings["gaze"].update(pitch_deg=v, yaw_deg=v)
            pipe.settings["smile"].update(strength=0.3 if k % 2 else 0.6)
            k += 1
            stop.wait(0.003)

    with FaceTracker(max_faces=1) as tr, open_source(str(path)) as src:
        pipe = Pipeline(tr, CpuCompositor(), effects, inplace=True)
        th = threading.Thread(target=flipper, args=(pipe,), daemon=True)
        th.start()
        try:
            stats = pipe.run(src, NullSink(), max_frames=60, on_frame=on_frame)
        finally:
            stop.set()
            th.join()
    assert stats["frames"] == 60
    gaze_values = set()
    for gz in seen_gaze:
        assert len(gz) <= 1, gz  # both eyes of a frame saw the same settings
        for d in gz:
            assert d in {(8.0, 8.0), (-8.0, -8.0)}, d
            gaze_values.add(d)
    assert gaze_values == {(8.0, 8.0), (-8.0, -8.0)}
    smile_values = set().union(*seen_smile)
    assert smile_values <= {0.3, 0.6} and len(smile_values) == 2
