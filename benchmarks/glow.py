"""Cost of the Glow expression-transfer model per face on this CPU (one thread).

    python -m benchmarks.glow [--model FILE] [--runs 50] [--json benchmarks/results/glow.json]

Measures, through the model runtime (:func:`warpcam.realtime.runtime.load_model`, the
TorchScript-traced CPU path): one call of the exported program on one aligned 64 x 64 face,
which runs **encode and decode** (``(x, z) -> (encode(x), decode(z), bpd)``), p50 / p99 over
``--runs`` calls after a warm-up; the same per face in batches of 16 (the transfer's batch);
and the alignment of one 256 px photo (tracker + aligned-face warp,
:class:`warpcam.training.glow.transfer.Aligner`). The input is a real face (the seed's aligned
emma photo) and the round-trip error of that face is reported too.

``--figure docs/glow_transfer_astronaut.png`` draws the README's alpha sweep with the
scikit-image astronaut (public domain) as the **target** (her mean latent: the photo and its
mirror image) and the seed's selena expression ``--expression N`` as the source (source mean:
the ten selena photos). Only the astronaut's outputs are drawn: pictures of the seed's people
stay out of the repository (``../shared/data/real/README.md``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import write_json

IDS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "images" / \
    "identities"


def _pct(ts) -> dict:
    ts = np.asarray(ts) * 1000.0
    return dict(p50_ms=round(float(np.percentile(ts, 50)), 2),
                p99_ms=round(float(np.percentile(ts, 99)), 2), runs=int(len(ts)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="Glow .pt2 (default: the bundled model)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", default=None)
    ap.add_argument("--figure", default=None, help="the astronaut alpha-sweep PNG (docs)")
    ap.add_argument("--expression", type=int, default=1, help="selena expression for --figure")
    ap.add_argument("--alpha", default="0.3:0.5:0.04", help="alphas of --figure")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from warpcam.training.glow.transfer import Aligner, GlowCodec, to_chw01

    t0 = time.perf_counter()
    codec = GlowCodec(a.model, threads=1)
    load_s = time.perf_counter() - t0
    photo = cv2.imread(str(IDS / "id1_aligned" / "emma1_aligned.png"))
    if photo is None:
        raise SystemExit(f"cannot read the benchmark face under {IDS}")
    with Aligner(codec.size) as aligner:
        aligner.align(photo)  # warm-up
        ta = []
        for _ in range(min(a.runs, 20)):
            t = time.perf_counter()
            face = aligner.align(photo)
            ta.append(time.perf_counter() - t)
    x = to_chw01(face[None])
    z = codec.encode(x)
    err = float(np.abs(codec.model(x, z)[1] - x).max())
    m = codec.model
    m(x, z)  # trace batch 1
    t1 = []
    for _ in range(a.runs):
        t = time.perf_counter()
        m(x, z)
        t1.append(time.perf_counter() - t)
    xb, zb = np.repeat(x, 16, 0), np.repeat(z, 16, 0)
    m(xb, zb)
    t16 = []
    for _ in range(max(3, a.runs // 8)):
        t = time.perf_counter()
        m(xb, zb)
        t16.append((time.perf_counter() - t) / 16)
    meta = m.meta
    res = dict(
        model=str(m.path.name), config=meta.config, backend=m.backend,
        threads=torch.get_num_threads(), load_s=round(load_s, 1),
        encode_decode_per_face_batch1=_pct(t1), encode_decode_per_face_batch16=_pct(t16),
        align_256px_photo=_pct(ta), round_trip_max_abs_error=err,
        training=dict(steps=meta.training.steps, minutes=meta.training.minutes,
                      val_bpd_5bit=meta.extra.get("val_bpd"), data=list(meta.training.data),
                      sizes=list(meta.training.sizes)))
    print(f"{m.path.name} ({m.backend}, {res['threads']} thread), loaded in {load_s:.1f} s")
    for k in ("encode_decode_per_face_batch1", "encode_decode_per_face_batch16",
              "align_256px_photo"):
        print(f"  {k:34s} p50 {res[k]['p50_ms']:8.2f} ms  p99 {res[k]['p99_ms']:8.2f} ms")
    print(f"  round trip of a real face: max |decode(encode(x)) - x| = {err:.2e}")
    if a.figure:
        res["figure"] = figure(codec, a.figure, a.expression, a.alpha)
    if a.json:
        write_json(a.json, res)
    return 0


def figure(codec, out, expression: int, alpha: str) -> dict:
    """The astronaut sweep (module docstring); returns what was drawn."""
    from tests.realdata import astronaut_bgr
    from warpcam.training.glow.transfer import (Aligner, parse_alphas, sheet, to_bgr_u8,
                                                to_chw01, transfer_latents)

    alphas = [0.0] + parse_alphas(alpha)
    astro = astronaut_bgr()
    src_dir = IDS / "expressions"
    with Aligner(codec.size) as aligner:
        tgt = np.stack([aligner.align(astro), aligner.align(np.ascontiguousarray(astro[:, ::-1]))])
        src_set, files, _ = aligner.align_folder(src_dir)
    stem = f"selena_expression{expression}_aligned"
    i = [p.stem for p in files].index(stem)
    z_src = codec.encode(to_chw01(src_set))
    zt = codec.encode(to_chw01(tgt)).mean(0)
    outs = to_bgr_u8(codec.decode(transfer_latents(zt, z_src[i], z_src.mean(0), alphas)))
    tiles = [tgt[0]] + list(outs)
    labels = ["astronaut (aligned)", "alpha 0 (mean)"] + [f"alpha {x:.2f}" for x in alphas[1:]]
    img = sheet(tiles, labels, scale=2, per_row=len(tiles))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out}")
    return dict(path=str(out), expression=stem, alphas=alphas)


if __name__ == "__main__":
    sys.exit(main())
