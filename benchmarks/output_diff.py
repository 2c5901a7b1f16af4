"""Compare this checkout's effect output with another revision's, frame by frame, on the same
tracked faces: how many grey levels the redesign changed.

    git worktree add /tmp/warpcam-base <REV>
    python -m benchmarks.output_diff --base /tmp/warpcam-base --videos V1.mp4 V2.mp4

The base revision must be one whose packages import as top-level ``realtime`` / ``kernels``
(before the ``warpcam`` import package); both run the CPU compositor on the faces this
checkout's tracker finds, so only the effects and the composite are compared. Prints, per video
and setting, the largest per-pixel difference and the share of pixels that differ by more than
one grey level, and writes them to ``benchmarks/results/output_diff.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SETTINGS = {
    "gaze +10, smile +0.5": dict(gaze=dict(pitch_deg=10.0), smile=0.5),
    "eye contact, smile -0.5": dict(gaze=dict(eye_contact=True), smile=-0.5),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="checkout of the revision to compare with")
    ap.add_argument("--videos", nargs="+", required=True)
    ap.add_argument("--max-faces", type=int, default=2)
    ap.add_argument("--frames", type=int, default=90)
    a = ap.parse_args(argv)

    import av

    from benchmarks import write_json
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects.smile import SmileSettings
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.realtime.tracker import FaceTracker

    sys.path.insert(0, str(Path(a.base).resolve()))
    from kernels.cpu import CpuCompositor as OldCpu  # noqa: E402  (the base revision)
    from realtime.gaze import GazeSettings as OldGaze  # noqa: E402
    from realtime.pipeline import EffectSettings as OldSettings  # noqa: E402
    from realtime.pipeline import Pipeline as OldPipeline  # noqa: E402
    from realtime.smile import SmileSettings as OldSmile  # noqa: E402

    results = []
    for video in a.videos:
        frames = []
        with av.open(video) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i >= a.frames:
                    break
                frames.append(f.to_ndarray(format="bgr24"))
        with FaceTracker(max_faces=a.max_faces) as tr:
            tracked = [tr.track(img, i / 30.0) for i, img in enumerate(frames)]
        for label, s in SETTINGS.items():
            new = Pipeline(None, CpuCompositor(), build_effects(
                gaze=GazeSettings(**s["gaze"]), smile=SmileSettings(s["smile"])))
            old = OldPipeline(None, OldCpu(), OldSettings(gaze=OldGaze(**s["gaze"]),
                                                           smile=OldSmile(s["smile"])))
            worst, over1, edited, ddeg = 0, 0, 0, []
            for i, (img, faces) in enumerate(zip(frames, tracked)):
                t = i / 30.0
                out_new, jobs_new = new.render(img.copy(), faces, t)
                out_old, jobs_old = old.render(img.copy(), faces, t)
                dn = {(j.face_id, j.kind): j.meta["delta_deg"] for j in jobs_new
                      if "delta_deg" in j.meta}
                ddeg += [np.subtract(dn[k], j.meta["delta_deg"]) for j in jobs_old
                         for k in [(j.face_id, j.kind)] if "delta_deg" in j.meta and k in dn]
                d = np.abs(out_new.astype(np.int16) - out_old.astype(np.int16)).max(-1)
                worst = max(worst, int(d.max()))
                over1 += int((d > 1).sum())
                edited += int((np.abs(out_old.astype(np.int16) - img).max(-1) > 0).sum())
            row = dict(video=Path(video).name, setting=label, frames=len(frames),
                       max_diff=worst, pixels_over_1=over1, edited_pixels=edited,
                       share_of_edited_over_1=over1 / max(edited, 1),
                       gaze_request_change_deg_p50=float(np.median(np.abs(ddeg))) if ddeg else 0.0,
                       gaze_request_change_deg_max=float(np.abs(ddeg).max()) if ddeg else 0.0)
            results.append(row)
            print(f"{row['video']:32s} {label:26s} max diff {worst:3d} grey levels, "
                  f"{over1} px > 1 ({100 * row['share_of_edited_over_1']:.2f} % of edited px), "
                  f"requested gaze change moved by {row['gaze_request_change_deg_p50']:.2f} deg "
                  f"p50, {row['gaze_request_change_deg_max']:.2f} max")
    write_json(Path(__file__).resolve().parent / "results" / "output_diff.json", dict(base=str(a.base), results=results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
