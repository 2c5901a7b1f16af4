"""Before/after figure on the scikit-image astronaut photo (public domain).

    python -m benchmarks.astronaut_figure [--out docs/astronaut_before_after.png]

Top row: face crops of the original, gaze +10 deg (up), smile +0.8 and smile -0.8.
Bottom row: 3x close-ups of the eyes (original vs gaze +10 deg) and of the mouth (original,
+0.8, -0.8). Every panel is labelled; all edits are the landmark-driven effects on the CPU
backend.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def render(settings_list, image: np.ndarray):
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.gaze import GazeEffect
    from warpcam.realtime.effects.smile import SmileEffect
    from warpcam.realtime.tracker import FaceTracker

    with FaceTracker(max_faces=1, static_images=True) as tr:
        faces = tr.track(image)
    if not faces:
        raise SystemExit("no face found in the astronaut photo")
    outs = []
    for gaze, smile in settings_list:
        jobs = GazeEffect(gaze).jobs(image, faces) + SmileEffect(smile).jobs(image, faces)
        outs.append(CpuCompositor().composite(image, jobs))
    return faces[0], outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/astronaut_before_after.png")
    a = ap.parse_args(argv)
    from skimage import data

    from warpcam.core import landmarks as lm
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects.smile import SmileSettings

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cases = [("original", GazeSettings(), SmileSettings(0.0)),
             ("gaze +10 deg", GazeSettings(pitch_deg=10.0), SmileSettings(0.0)),
             ("smile +0.8", GazeSettings(), SmileSettings(0.8)),
             ("smile -0.8", GazeSettings(), SmileSettings(-0.8))]
    face, outs = render([(g, s) for _, g, s in cases], img)
    p = face.landmarks
    x0, y0 = np.floor(p.min(axis=0)).astype(int) - 20
    x1, y1 = np.ceil(p.max(axis=0)).astype(int) + 20
    x0, y0 = max(x0, 0), max(y0, 0)
    top = [_label(cv2.resize(o[y0:y1, x0:x1], (240, int(240 * (y1 - y0) / (x1 - x0)))), name)
           for (name, _, _), o in zip(cases, outs)]
    eyes = np.concatenate([p[lm.RIGHT_EYE_UPPER + lm.LEFT_EYE_UPPER + lm.RIGHT_EYE_LOWER
                             + lm.LEFT_EYE_LOWER]])
    ex0, ey0 = np.floor(eyes.min(axis=0)).astype(int) - 8
    ex1, ey1 = np.ceil(eyes.max(axis=0)).astype(int) + 8
    mouth = p[lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER]
    mx0, my0 = np.floor(mouth.min(axis=0)).astype(int) - 15
    mx1, my1 = np.ceil(mouth.max(axis=0)).astype(int) + 15

    def zoom(o, box, w):
        bx0, by0, bx1, by1 = box
        c = o[by0:by1, bx0:bx1]
        return cv2.resize(c, (w, int(w * c.shape[0] / c.shape[1])), interpolation=cv2.INTER_CUBIC)

    eye_panels = [_label(zoom(outs[i], (ex0, ey0, ex1, ey1), 480), t)
                  for i, t in ((0, "eyes: original"), (1, "eyes: gaze +10 deg"))]
    mouth_panels = [_label(zoom(outs[i], (mx0, my0, mx1, my1), 320), t)
                    for i, t in ((0, "mouth: original"), (2, "smile +0.8"), (3, "smile -0.8"))]
    row1 = np.hstack(top)
    row2 = np.hstack(eye_panels)
    row3 = np.hstack(mouth_panels)
    width = max(r.shape[1] for r in (row1, row2, row3))
    pad = lambda r: cv2.copyMakeBorder(r, 2, 2, 0, width - r.shape[1], cv2.BORDER_CONSTANT,
                                       value=(255, 255, 255))
    sheet = np.vstack([pad(row1), pad(row2), pad(row3)])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(a.out, sheet)
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
