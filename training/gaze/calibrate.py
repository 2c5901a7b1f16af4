"""Personal gaze model from recorded videos: mine pairs, fine-tune, export.

    warpcam calibrate [--input 0] [--seconds 60] [--out ~/.warpcam/gaze_personal.pt2]
    python -m warpcam.training.gaze.calibrate --input recording.avi [...]   # a recorded video

Recording (the dot window and the webcam) is the app's part: :mod:`warpcam.realtime.calibrate`
(``warpcam calibrate``) records the user following a dot and hands the recording to
:func:`calibrate_videos`. This module stands on the ground and runtime floors only and takes
video files:

1. **Mine** pairs from the recording(s) (:mod:`warpcam.training.gaze.mine`: same head pose and
   openness, different iris direction, angles from the iris landmarks).
2. **Fine-tune** the base model (default: the bundled ``gaze_deepwarp.pt2``; its weights are
   read from the exported program, no pickles) on the personal pairs mixed with fresh
   synthetic renders (so it keeps what it knew), ``--steps`` Adam steps.
3. **Export** to ``--out`` with metadata naming the recording; use it with
   ``warpcam --gaze-model OUT``.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

DEFAULT_OUT = os.path.expanduser("~/.warpcam/gaze_personal.pt2")
#: Fewest mined pairs a fine-tune is run on.
MIN_PAIRS = 8


class CalibrationError(RuntimeError):
    """A calibration that cannot go on (too few usable pairs); the message is one line for the
    user."""


@dataclass
class CalibrationResult:
    out: Path
    pairs: int
    steps: int
    final_loss: float


def model_from_pt2(path) -> tuple:
    """``(DeepWarpGaze, metadata)`` with the weights of an exported gaze program."""
    from warpcam.realtime.gaze_model import load_gaze_model
    from warpcam.training.gaze.model import DeepWarpGaze, GazeNetConfig

    gm = load_gaze_model(path, device="cpu", threads=None)  # checked: nothing is unpickled
    net = DeepWarpGaze(GazeNetConfig(**gm.meta["config"]))
    sd = {k[len("net."):]: v for k, v in gm.runtime.program.state_dict.items()
          if k.startswith("net.")}
    net.load_state_dict(sd)
    return net, gm.meta


def fine_tune(net, pairs, steps: int, lr: float = 5e-4, batch: int = 32, seed: int = 0,
              progress: bool = True):
    """A few Adam steps on ``pairs`` (a pair dataset); returns the mean loss of the last 20."""
    from warpcam.training.gaze.data import collate
    from warpcam.training.gaze.model import anchor_points, gaze_loss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    losses = []
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="calibrate", unit="step")
    for _ in it:
        b = collate([pairs[int(i)] for i in rng.integers(0, len(pairs), batch)])
        anchors = anchor_points(b["landmarks"]) if net.cfg.anchors else None
        out = net(b["src"], b["angle"], anchors)
        loss, _ = gaze_loss(out, b["tgt"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return float(np.mean(losses[-20:])) if losses else float("nan")


def add_training_arguments(ap: argparse.ArgumentParser) -> None:
    """The mining / fine-tuning / export flags shared by ``warpcam calibrate``
    (:mod:`warpcam.realtime.calibrate`) and this module's command line."""
    ap.add_argument("--out", default=DEFAULT_OUT, help="personal model (.pt2)")
    ap.add_argument("--base", default=None, help="model to start from (default: the bundled one)")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    ap.add_argument("--synthetic-eyes", type=int, default=300,
                    help="synthetic eyes rendered to mix in (0: personal pairs only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")


def load_base(base=None) -> tuple:
    """``(net, metadata)`` of the model to start from (``None``: the bundled one).

    Raises:
        GazeModelError: the file is missing or not a valid gaze model.
    """
    from warpcam.realtime.gaze_model import DEFAULT_MODEL

    return model_from_pt2(base or DEFAULT_MODEL)


def calibrate_videos(videos: Sequence, out=DEFAULT_OUT, *, base=None, model: Optional[tuple] = None,
                     steps: int = 300, synthetic_eyes: int = 300, seed: int = 0,
                     max_seconds: Optional[float] = None, label: Optional[str] = None,
                     progress: bool = True) -> CalibrationResult:
    """Mine pairs from recorded ``videos``, fine-tune the base model on them, export to ``out``.

    Args:
        videos: video file paths (one person following a dot, head still).
        out: the personal model to write (``.pt2``).
        base: model to start from (``None``: the bundled one); ignored when ``model`` is given.
        model: ``(net, metadata)`` already loaded by :func:`load_base` (so a caller can fail
            before recording).
        steps, synthetic_eyes, seed: fine-tuning steps, synthetic eyes mixed in (0: none), seed.
        max_seconds: use the first ``max_seconds`` of each video, at its declared frame rate
            (all of it when ``None``).
        label: what the metadata's ``training_data`` names the recording (default: the file
            names).
        progress: progress bar while fine-tuning.

    Raises:
        CalibrationError: fewer than :data:`MIN_PAIRS` usable pairs.
        GazeModelError: the base model cannot be loaded.
    """
    from warpcam.training.gaze.data import MixedPairs, StoredPairs, SyntheticPairs
    from warpcam.training.gaze.export import export
    from warpcam.training.gaze.mine import mine_video, video_fps
    from warpcam.training.gaze.render import render_groups

    net, base_meta = model if model is not None else load_base(base)
    rng = np.random.default_rng(seed)
    pairs = []
    for v in videos:
        max_frames = (None if max_seconds is None
                      else max(int(max_seconds * (video_fps(v) or 30.0)), 1))
        pairs += mine_video(v, rng, max_faces=1, max_frames=max_frames, max_per_eye=4000)
    if len(pairs) < MIN_PAIRS:
        raise CalibrationError(
            f"only {len(pairs)} usable pairs in the recording: look at the dots with your eyes "
            "(not your head), in steady light, eyes open")
    data = {k: np.stack([np.asarray(p[k]) for p in pairs]) for k in
            ("src", "tgt", "angle", "landmarks", "iris_d")}
    sets, weights = [StoredPairs(data, "calibration")], [1.0]
    if synthetic_eyes > 0:
        sets.append(SyntheticPairs(render_groups(synthetic_eyes, 4, seed=seed + 1)))
        weights.append(1.0)
    mix = MixedPairs(sets, weights, length=max(len(pairs), 1000), seed=seed)
    loss = fine_tune(net, mix, steps, seed=seed, progress=progress)
    if label is None:
        label = ",".join(Path(str(v)).name for v in videos)
    meta = dict(base_meta)
    meta.update(training_data=list(base_meta.get("training_data", [])) + [
        f"calibration:{label} ({len(pairs)} pairs, {steps} steps)"],
        notes="personal model from `warpcam calibrate`", final_loss=loss)
    return CalibrationResult(Path(export(net, meta, out)), len(pairs), steps, loss)


def main(argv=None) -> int:
    """Calibrate from recorded video files (``--input A.avi [B.avi ...]``). Recording from a
    webcam is ``warpcam calibrate`` (:func:`warpcam.realtime.calibrate.main`), which takes the
    same flags."""
    ap = argparse.ArgumentParser(prog="python -m warpcam.training.gaze.calibrate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", nargs="+", required=True, metavar="VIDEO",
                    help="recorded video file(s) of the user following the dot")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="use the first SECONDS of each video (default 60)")
    add_training_arguments(ap)
    # `warpcam calibrate`'s recording flags, accepted so that one command line works for both.
    ap.add_argument("--no-window", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--keep-recording", default=None, help=argparse.SUPPRESS)
    # The rest of warpcam's options may come along from `run.py --calibrate`; ignore them.
    a, _ = ap.parse_known_args(argv)

    from warpcam.realtime.gaze_model import GazeModelError

    def fail(msg):
        print(f"warpcam: error: {msg}", flush=True, file=sys.stderr)
        return 2

    videos = []
    for v in a.input:
        s = str(v).strip()
        if s.isdigit() or (s.startswith("/dev/video") and s[len("/dev/video"):].isdigit()):
            return fail(f"--input {v}: recording from a webcam is `warpcam calibrate` "
                        "(this entry point takes recorded video files)")
        p = Path(v).expanduser()
        if not p.is_file():
            return fail(f"input not found: {p}")
        videos.append(p)
    try:
        model = load_base(a.base)
    except GazeModelError as exc:
        return fail(str(exc))
    try:
        res = calibrate_videos(videos, a.out, model=model, steps=a.steps,
                               synthetic_eyes=a.synthetic_eyes, seed=a.seed,
                               max_seconds=a.seconds, progress=not a.quiet)
    except CalibrationError as exc:
        return fail(str(exc))
    if not a.quiet:
        print(f"calibrate: {res.pairs} pairs, {res.steps} steps -> {res.out} "
              f"(use: warpcam --gaze-model {res.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
