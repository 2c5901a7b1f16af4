"""Procedural eye renderer: pairs of eye crops of the same eye and head pose at two known gazes.

    python -m warpcam.training.gaze.render --eyes 8000 --gazes 6 --out /tmp/warpcam/synth.npz

Each *eye* is a random person (eye width, canthal tilt, lid shape, iris colour and texture,
pupil size, sclera tint and veins, skin tone, lashes, brow, lighting, blur) at a random head
pose; it is rendered at ``K`` random gazes, so every ordered pair of its renders is a training
pair with an exact angle difference. The crop is the pipeline's eye ROI (the one rule of
:mod:`warpcam.core.eyes`): centred on the eye contour, 2x the corner-to-corner width, 0.8 as
high, rotated along the eye axis, sampled at 41 x 51 (H x W). The rendered eye is
a **right** eye (the subject's right: outer corner on the crop's left, inner corner and
caruncle on its right), i.e. what the network sees for both eyes after the left one is flipped.

Geometry (millimetres, head coordinates: x to the image right for a frontal face, y down,
z away from the camera):

- The eyeball rotates about ``C``. The iris is the spherical cap of the sphere of radius
  ``sqrt(12^2 + 5.85^2)`` around ``C`` whose rim (the limbus, 11.7 mm across) lies 12 mm from
  ``C``: a rotation by ``delta`` moves the limbus centre by ``12 sin(delta)``, which is the
  eyeball model of the pipeline (:func:`warpcam.core.eyes.gaze_shift_px`), so the angle labels and
  the pipeline's degrees-to-pixels agree.
- Lids are curves over the eye-corner line on a sphere 0.6 mm outside the eyeball; the upper lid
  follows vertical gaze (a random 0.8-1.1 of the iris displacement: lid-eye coordination), the
  lower lid a little (0.2-0.45); the lid skin, lashes and crease move with the lid. A ray sees the eyeball where it crosses the lid sphere inside the opening, skin
  elsewhere. Camera: orthographic, at the head pose.
- Gaze angles (degrees, eye in head): pitch positive = up, yaw positive = toward the image +x
  (the subject's left), as everywhere in warpcam.

Output images are uint8 **RGB**, ``41 x 51 x 3``. Landmarks (crop pixels, of each render): upper
lid 9 points and lower lid 9 points from the outer to the inner corner (mediapipe's eye chains),
the iris centre, and the iris diameter.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np

from warpcam.core.eyes import EYE_CROP_H as CROP_H, EYE_CROP_W as CROP_W, roi_affines_for
from warpcam.core.geometry import to_crop

EYE_R = 12.0  # rotation centre to limbus plane, mm (the pipeline's eyeball model)
IRIS_R = 5.85  # limbus radius, mm
SPHERE_R = math.hypot(EYE_R, IRIS_R)
THETA_IRIS = math.atan2(IRIS_R, EYE_R)
LID_GAP = 0.6

IRIS_COLOURS = np.array([  # RGB 0-1: dark brown, brown, hazel, green, grey, blue, light blue
    (0.18, 0.10, 0.05), (0.33, 0.19, 0.09), (0.45, 0.33, 0.16), (0.33, 0.40, 0.24),
    (0.42, 0.45, 0.47), (0.28, 0.40, 0.55), (0.45, 0.58, 0.70)], np.float32)
SKIN_TONES = np.array([  # RGB 0-1, light to dark
    (0.93, 0.78, 0.68), (0.87, 0.67, 0.55), (0.78, 0.57, 0.44), (0.66, 0.45, 0.32),
    (0.50, 0.33, 0.22), (0.36, 0.23, 0.16), (0.25, 0.16, 0.11)], np.float32)


def _u(rng, lo, hi, n):
    return rng.uniform(lo, hi, n).astype(np.float32)


def sample_eyes(rng: np.random.Generator, n: int) -> dict:
    """Random per-eye parameters (one value per eye; head pose and everything but the gaze)."""
    p = dict(
        eye_w=_u(rng, 24, 29.5, n), tilt=_u(rng, -2.5, 1.0, n),  # outer corner y - inner corner y
        inner_dy=_u(rng, -0.5, 1.0, n),
        h_up=_u(rng, 4.5, 8.0, n), h_lo=_u(rng, 3.0, 5.0, n),
        skew_up=_u(rng, 0.75, 1.3, n), skew_lo=_u(rng, 0.8, 1.25, n),
        pow_up=_u(rng, 0.6, 1.0, n), pow_lo=_u(rng, 0.6, 1.0, n),
        follow_up=_u(rng, 0.8, 1.1, n), follow_lo=_u(rng, 0.2, 0.45, n),
        cx=_u(rng, -1.0, 1.0, n), cy=_u(rng, -0.5, 1.5, n), cz=_u(rng, 9.5, 12.5, n),
        head_yaw=rng.normal(0, 12, n).clip(-30, 30).astype(np.float32),
        head_pitch=rng.normal(0, 9, n).clip(-25, 25).astype(np.float32),
        pupil=_u(rng, 0.22, 0.5, n),
        iris_col=(IRIS_COLOURS[rng.integers(0, len(IRIS_COLOURS), n)]
                  * _u(rng, 0.7, 1.3, n)[:, None]).clip(0.02, 1),
        iris_k1=rng.integers(20, 60, n).astype(np.float32), iris_k2=rng.integers(7, 19, n).astype(np.float32),
        iris_ph=_u(rng, 0, 6.28, n), iris_contrast=_u(rng, 0.15, 0.5, n),
        limbus=_u(rng, 0.2, 0.7, n),
        sclera=np.stack([_u(rng, 0.80, 0.95, n), _u(rng, 0.74, 0.90, n), _u(rng, 0.70, 0.88, n)], 1),
        veins=_u(rng, 0.0, 1.0, n), vein_f=_u(rng, 5, 11, n), vein_ph=_u(rng, 0, 6.28, n),
        skin=(SKIN_TONES[rng.integers(0, len(SKIN_TONES), n)] * _u(rng, 0.85, 1.15, n)[:, None]
              + rng.normal(0, 0.03, (n, 3))).clip(0.05, 1).astype(np.float32),
        skin_tex=_u(rng, 0.0, 0.05, n), skin_ph=_u(rng, 0, 6.28, n),
        crease=_u(rng, 2.0, 6.0, n), crease_dark=_u(rng, 0.0, 0.35, n),
        lash=_u(rng, 0.2, 1.0, n), lash_len=_u(rng, 0.8, 2.5, n), lash_f=_u(rng, 2.0, 4.0, n),
        brow=(rng.random(n) < 0.6).astype(np.float32) * _u(rng, 0.3, 0.8, n),
        brow_y=_u(rng, 12.0, 17.0, n),
        light=np.stack([_u(rng, -0.6, 0.6, n), _u(rng, -0.7, 0.2, n), -np.ones(n, np.float32)], 1),
        ambient=_u(rng, 0.35, 0.7, n), exposure=_u(rng, 0.7, 1.25, n),
        tint=(1 + rng.normal(0, 0.06, (n, 3))).astype(np.float32),
        blur=_u(rng, 0.0, 1.1, n), noise=_u(rng, 0.0, 4.0, n),
        spec=(rng.random(n) < 0.85).astype(np.float32), spec_r=_u(rng, 0.04, 0.09, n),
        jitter=rng.normal(0, 1, (n, 4)).astype(np.float32),  # crop jitter (dx, dy, scale, rot)
    )
    p["light"] /= np.linalg.norm(p["light"], axis=1, keepdims=True)
    return p


def _rot(yaw_deg, pitch_deg):
    """``(n, 3, 3)`` head -> camera rotations (yaw about y, then pitch about x)."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    cy, sy, cp, sp = np.cos(y), np.sin(y), np.cos(p), np.sin(p)
    one, zero = np.ones_like(y), np.zeros_like(y)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                   np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1),
                   np.stack([zero, sp, cp], -1)], -2)
    return (rx @ ry).astype(np.float64)


def _lid_curves(p, x, gaze_pitch):
    """Upper and lower lid y (head mm) at head x (broadcast ``(n, ...)``) for eye pitch (deg)."""
    def col(a):
        return a.reshape((-1,) + (1,) * (x.ndim - 1))
    half = col(p["eye_w"]) / 2
    s = np.clip((x + half) / (2 * half), 0.0, 1.0)  # 0 outer corner, 1 inner corner
    yc = col(p["tilt"]) * (1 - s) + col(p["inner_dy"]) * s
    rise = EYE_R * np.sin(np.radians(col(gaze_pitch)))  # iris moves up by this (mm)
    hu = np.maximum(col(p["h_up"]) + col(p["follow_up"]) * rise, 0.4)
    hl = np.maximum(col(p["h_lo"]) - col(p["follow_lo"]) * rise, 0.4)
    prof_u = np.sin(np.pi * s ** col(p["skew_up"])) ** col(p["pow_up"])
    prof_l = np.sin(np.pi * s ** col(p["skew_lo"])) ** col(p["pow_lo"])
    return yc - hu * prof_u, yc + hl * prof_l, s


def _lid_z(p, x, y):
    """z (head mm) of the lid sphere surface at (x, y) (front side), for landmarks."""
    def col(a):
        return a.reshape((-1,) + (1,) * (x.ndim - 1))
    cz = col(p["cz"])
    r2 = (SPHERE_R + LID_GAP) ** 2 - (x - col(p["cx"])) ** 2 - (y - col(p["cy"])) ** 2
    return cz - np.sqrt(np.maximum(r2, 0.0))


def _project(R, pts):
    """Orthographic projection of head points ``(n, m, 3)`` -> image plane ``(n, m, 2)`` mm."""
    return np.einsum("nij,nmj->nmi", R, pts)[..., :2]


def _contour(p, gaze_pitch, m=9):
    """Upper and lower lid chains (``(n, m, 3)`` head mm), outer to inner corner."""
    half = p["eye_w"][:, None] / 2
    x = -half + (2 * half) * np.linspace(0, 1, m)[None, :]
    yu, yl, _ = _lid_curves(p, x, gaze_pitch)
    up = np.stack([x, yu, _lid_z(p, x, yu)], -1)
    lo = np.stack([x, yl, _lid_z(p, x, yl)], -1)
    return up, lo


def crop_affines(p, gaze_pitch, jitter: float = 1.0):
    """Crop -> image-plane affines ``(n, 2, 3)`` (mm) by the pipeline's eye-ROI rule
    (:func:`warpcam.core.eyes.roi_affines_for`, centred on the contour mean as
    :func:`warpcam.core.eyes.eye_roi`), from the eye contour at ``gaze_pitch``, with a random
    jitter (tracker noise) of scale ``jitter``."""
    R = _rot(p["head_yaw"], p["head_pitch"])
    up, lo = _contour(p, gaze_pitch)
    up2, lo2 = _project(R, up), _project(R, lo)
    a, b = up2[:, 0], up2[:, -1]
    eye_w = np.linalg.norm(b - a, axis=1)
    contour = np.concatenate([up2, lo2[:, -2:0:-1]], axis=1)
    centre = contour.mean(axis=1)
    ang = np.arctan2(b[:, 1] - a[:, 1], b[:, 0] - a[:, 0])
    j = p["jitter"] * jitter
    centre = centre + eye_w[:, None] * 0.02 * j[:, :2]
    eye_w = eye_w * (1 + 0.03 * j[:, 2])
    ang = ang + np.radians(2.0) * j[:, 3]
    return roi_affines_for(centre, ang, eye_w, CROP_W, CROP_H)


def _smooth_edge(d, px):
    """Anti-aliased step: 0 for d << 0, 1 for d >> 0, ramp over one pixel (``px`` mm)."""
    return np.clip(0.5 + d / px, 0.0, 1.0)


def render(p: dict, gaze: np.ndarray, affines: np.ndarray, rng: np.random.Generator,
           out_size=(CROP_H, CROP_W)) -> tuple:
    """Render eyes at given gazes into crops.

    Args:
        p: eye parameters from :func:`sample_eyes` (``n`` eyes).
        gaze: ``(n, 2)`` eye-in-head (pitch, yaw) degrees.
        affines: ``(n, 2, 3)`` crop -> image-plane (mm) affines (:func:`crop_affines`).
        rng: for the sensor noise.

    Returns:
        ``(images (n, h, w, 3) uint8 RGB, landmarks (n, 19, 2) crop px, iris_d (n,) crop px)``.
    """
    h, w = out_size
    n = len(gaze)
    f32 = np.float32
    R = _rot(p["head_yaw"], p["head_pitch"])
    vs, us = np.mgrid[0:h, 0:w].astype(np.float64)
    a = affines[:, 0, 0, None, None] * us + affines[:, 0, 1, None, None] * vs + affines[:, 0, 2, None, None]
    b = affines[:, 1, 0, None, None] * us + affines[:, 1, 1, None, None] * vs + affines[:, 1, 2, None, None]
    px = np.hypot(affines[:, 0, 0], affines[:, 1, 0])[:, None, None]  # mm per crop pixel
    Rt = np.transpose(R, (0, 2, 1))
    d = Rt[:, :, 2]  # ray direction (camera +z) in head coords, (n, 3)
    o = (Rt[:, None, None, :, 0] * a[..., None] + Rt[:, None, None, :, 1] * b[..., None]
         - 60.0 * d[:, None, None, :])  # (n, h, w, 3)
    C = np.stack([p["cx"], p["cy"], p["cz"]], -1)[:, None, None, :]
    oc = o - C
    dd = d[:, None, None, :]
    bq = (oc * dd).sum(-1)
    cq = (oc * oc).sum(-1)

    def hit(radius):
        disc = bq * bq - (cq - radius ** 2)
        t = -bq - np.sqrt(np.maximum(disc, 0.0))
        return o + t[..., None] * dd, disc > 0

    Q, q_ok = hit(SPHERE_R + LID_GAP)
    # Rays that miss the lid sphere meet the skin on the plane z = cz - sphere radius.
    t_plane = ((C[..., 2] - SPHERE_R) - o[..., 2]) / dd[..., 2]
    Qp = o + t_plane[..., None] * dd
    Q = np.where(q_ok[..., None], Q, Qp)
    qx, qy = Q[..., 0], Q[..., 1]
    pitch, yaw = gaze[:, 0].astype(np.float64), gaze[:, 1].astype(np.float64)
    y_up, y_lo, s = _lid_curves(p, qx, pitch)
    half = p["eye_w"][:, None, None] / 2
    inside_x = np.minimum(qx + half, half - qx)
    opening = (_smooth_edge(qy - y_up, px) * _smooth_edge(y_lo - qy, px)
               * _smooth_edge(inside_x, px)).astype(f32)

    # --- eyeball -------------------------------------------------------------------------
    P, _ = hit(SPHERE_R)
    nrm = (P - C) / SPHERE_R
    cp, sp, cyw, syw = np.cos(np.radians(pitch)), np.sin(np.radians(pitch)), np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    g = np.stack([syw * cp, -sp, -cyw * cp], -1)[:, None, None, :]
    cos_t = np.clip((nrm * g).sum(-1), -1, 1)
    theta = np.arccos(cos_t)
    rho = theta / THETA_IRIS
    ex = np.array([1.0, 0.0, 0.0])
    e1 = ex - g * g[..., :1]
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(g, e1)
    phi = np.arctan2((nrm * e2).sum(-1), (nrm * e1).sum(-1))

    def col(k):
        return p[k][:, None, None].astype(np.float64)

    fib = (0.5 + 0.5 * np.sin(col("iris_k1") * phi + col("iris_ph") + 4.0 * rho)
           * np.sin(col("iris_k2") * phi + 2.0 * col("iris_ph")))
    ring = np.exp(-((rho - 0.55) / 0.12) ** 2)
    tex = 1.0 + col("iris_contrast") * (fib - 0.5) * 2 + 0.25 * ring
    limb = 1.0 - col("limbus") * np.clip((rho - 0.7) / 0.3, 0, 1) ** 2
    iris_rgb = p["iris_col"][:, None, None, :] * (tex * limb)[..., None]
    pupil_m = _smooth_edge(col("pupil") - rho, px / SPHERE_R / THETA_IRIS)
    iris_rgb = iris_rgb * (1 - pupil_m[..., None]) + 0.03 * pupil_m[..., None]
    iris_m = _smooth_edge(1.0 - rho, px / SPHERE_R / THETA_IRIS)
    # sclera with veins (denser toward the corners, i.e. far from the cornea)
    vein_pat = np.abs(np.sin(col("vein_f") * phi + 3.0 * np.sin(2.3 * theta + col("vein_ph"))
                             + col("vein_ph")))
    vein = (vein_pat < 0.08) * col("veins") * np.clip((theta - 0.6) / 0.5, 0, 1)
    scl = p["sclera"][:, None, None, :] * (1 - 0.35 * vein[..., None] * np.array([0.2, 1.0, 1.0]))
    eye_rgb = iris_rgb * iris_m[..., None] + scl * (1 - iris_m[..., None])
    L = p["light"][:, None, None, :]
    diff = np.clip(-(nrm * L).sum(-1), 0, 1)
    shade = col("ambient") + (1 - col("ambient")) * diff
    # shadow of the upper lid and its lashes on the eyeball; darker into the corners
    lid_shadow = 1 - 0.35 * np.exp(-np.maximum(qy - y_up, 0) / 1.0)
    corner_shadow = 1 - 0.3 * np.exp(-np.maximum(inside_x, 0) / 2.0)
    eye_rgb = eye_rgb * (shade * lid_shadow * corner_shadow)[..., None]
    # caruncle: pink at the inner corner
    car = np.clip((qx - (half - 3.5)) / 2.0, 0, 1)[..., None]
    eye_rgb = eye_rgb * (1 - car) + car * np.array([0.75, 0.45, 0.45]) * shade[..., None]
    # corneal highlight: fixed relative to the light, on the cornea only
    hv = -(L + dd)
    hv = hv / np.linalg.norm(hv, axis=-1, keepdims=True)
    spec_m = (_smooth_edge(col("spec_r") - np.arccos(np.clip((nrm * hv).sum(-1), -1, 1)), 0.03)
              * (rho < 1.05) * col("spec"))
    eye_rgb = eye_rgb * (1 - spec_m[..., None]) + 0.98 * spec_m[..., None]

    # --- skin ----------------------------------------------------------------------------
    skin = p["skin"][:, None, None, :].astype(np.float64)
    above = y_up - qy  # > 0 above the upper lid margin
    # lid skin moves with the lid: texture y follows the lid's displacement, fading upward
    rise = EYE_R * np.sin(np.radians(pitch))[:, None, None] * col("follow_up")
    ty = qy + rise * np.exp(-np.maximum(above, 0) / 6.0) * (above > 0)
    stex = 1 + col("skin_tex") * (np.sin(1.7 * qx + 2.3 * ty + col("skin_ph"))
                                  * np.sin(3.1 * qx - 1.3 * ty) + 0.5 * np.sin(5.3 * ty + 0.7 * qx))
    crease = col("crease_dark") * np.exp(-((above - col("crease")) / 0.8) ** 2) * (
        np.sin(np.pi * np.clip(s, 0, 1)) ** 0.5)
    in_corners = _smooth_edge(inside_x + 0.3, px)
    margin_up = np.exp(-(np.maximum(above, 0) / 0.45) ** 2) * (above > -0.3) * in_corners
    lash_lines = (0.5 + 0.5 * np.sin(col("lash_f") * 2 * np.pi * qx + 3 * above)) ** 6
    lashes = col("lash") * np.clip(1 - above / col("lash_len"), 0, 1) * (above > 0) * lash_lines * in_corners
    below = qy - y_lo
    margin_lo = 0.3 * np.exp(-(np.maximum(below, 0) / 0.5) ** 2) * in_corners
    brow_m = col("brow") * _smooth_edge((y_up.min(axis=2, keepdims=True) * 0 - col("brow_y")) - qy + 3.0, 1.5) * (
        0.7 + 0.3 * np.sin(9 * qx + 4 * qy) ** 2) * _smooth_edge(-(y_up.min(axis=2, keepdims=True) * 0 - col("brow_y")) + qy + 6.0, 2.0)
    dark = np.clip(margin_up * 0.8 + lashes + crease + brow_m, 0, 0.95) * (1 - opening)
    skin_n_shade = col("ambient") + (1 - col("ambient")) * np.clip(-(L[..., 2]) * 0.8 + 0.2 * (-L[..., 0]) * np.tanh(qx / 15), 0, 1)
    skin_rgb = skin * (stex * skin_n_shade)[..., None]
    skin_rgb = skin_rgb * (1 - dark[..., None]) + 0.05 * dark[..., None]
    skin_rgb = skin_rgb * (1 - 0.4 * margin_lo[..., None] * np.array([0.0, 0.6, 0.6]))
    # broad lighting gradient over the crop
    grad = 1 + 0.15 * (L[..., 0] * qx + L[..., 1] * qy) / 15.0

    op = opening[..., None]
    img = (op * eye_rgb + (1 - op) * skin_rgb) * (grad * col("exposure"))[..., None]
    img = img * p["tint"][:, None, None, :]
    img = (img * 255.0).astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        im = img[i]
        if p["blur"][i] > 0.25:
            im = cv2.GaussianBlur(im, (0, 0), float(p["blur"][i]))
        if p["noise"][i] > 0:
            im = im + rng.normal(0, p["noise"][i], im.shape).astype(np.float32)
        out[i] = np.clip(im + 0.5, 0, 255).astype(np.uint8)
    # landmarks in crop pixels
    up, lo = _contour(p, pitch)
    iris_c = np.stack([C[:, 0, 0, 0] + EYE_R * g[:, 0, 0, 0], C[:, 0, 0, 1] + EYE_R * g[:, 0, 0, 1],
                       C[:, 0, 0, 2] + EYE_R * g[:, 0, 0, 2]], -1)[:, None, :]
    pts = _project(R, np.concatenate([up, lo, iris_c], 1))
    crop_pts = np.stack([to_crop(q, A) for q, A in zip(pts, affines)])
    iris_d = 2 * IRIS_R / px[:, 0, 0]
    return out, crop_pts.astype(np.float32), iris_d.astype(np.float32)


def sample_gazes(rng, n, k):
    """``(n, k, 2)`` eye-in-head gazes (pitch, yaw) degrees: a centre per eye plus spread."""
    centre = np.stack([rng.normal(-3, 7, n).clip(-20, 15), rng.normal(0, 9, n).clip(-22, 22)], -1)
    spread = np.stack([rng.uniform(-13, 13, (n, k)), rng.uniform(-16, 16, (n, k))], -1)
    g = centre[:, None, :] + spread
    g[..., 0] = g[..., 0].clip(-30, 25)
    g[..., 1] = g[..., 1].clip(-35, 35)
    return g.astype(np.float32)


def render_groups(n_eyes: int, k: int, seed: int = 0, chunk: int = 64, progress: bool = False):
    """Render ``n_eyes`` eyes at ``k`` gazes each, all in the crop of the eye's mean gaze.

    Returns:
        dict with ``images (n, k, 41, 51, 3) uint8 RGB``, ``gaze (n, k, 2)`` degrees,
        ``landmarks (n, k, 19, 2)``, ``iris_d (n, k)`` crop pixels, ``head (n, 2)`` (yaw, pitch).
    """
    rng = np.random.default_rng(seed)
    imgs = np.empty((n_eyes, k, CROP_H, CROP_W, 3), np.uint8)
    lms = np.empty((n_eyes, k, 19, 2), np.float32)
    irid = np.empty((n_eyes, k), np.float32)
    gazes = np.empty((n_eyes, k, 2), np.float32)
    heads = np.empty((n_eyes, 2), np.float32)
    it = range(0, n_eyes, chunk)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, unit="chunk", desc="render")
    for s0 in it:
        m = min(chunk, n_eyes - s0)
        p = sample_eyes(rng, m)
        g = sample_gazes(rng, m, k)
        A = crop_affines(p, g[:, :, 0].mean(axis=1))
        rep = {key: np.repeat(v, k, axis=0) for key, v in p.items()}
        im, lm, d = render(rep, g.reshape(-1, 2), np.repeat(A, k, axis=0), rng)
        imgs[s0:s0 + m] = im.reshape(m, k, CROP_H, CROP_W, 3)
        lms[s0:s0 + m] = lm.reshape(m, k, 19, 2)
        irid[s0:s0 + m] = d.reshape(m, k)
        gazes[s0:s0 + m] = g
        heads[s0:s0 + m] = np.stack([p["head_yaw"], p["head_pitch"]], -1)
    return dict(images=imgs, gaze=gazes, landmarks=lms, iris_d=irid, head=heads)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Render procedural eye groups (pairs) to an .npz.")
    ap.add_argument("--eyes", type=int, default=8000, help="number of eyes (people x poses)")
    ap.add_argument("--gazes", type=int, default=6, help="renders per eye (pairs: k (k - 1))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output .npz (keep it out of the repository)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = render_groups(a.eyes, a.gazes, a.seed, progress=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **data, source=np.array("synthetic"), seed=np.array(a.seed))
    print(f"{a.eyes} eyes x {a.gazes} gazes = {a.eyes * a.gazes * (a.gazes - 1)} pairs in "
          f"{time.perf_counter() - t0:.1f} s -> {a.out}")


if __name__ == "__main__":
    main()
