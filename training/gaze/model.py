"""DeepWarp gaze redirection network (Ganin et al., ECCV 2016; layout of BlueWinters/DeepWarp,
``reference/seed-recipes.md`` Sec. 2), sized to run two eyes in about a millisecond on a CPU.

Convention block:

- Input ``img``: ``(N, 3, 41, 51)`` float32 **RGB in [0, 1]**, the pipeline's eye crop
  (:func:`warpcam.realtime.gaze_model.eye_crop_affine`) of a **right** eye; a left eye is flipped
  left-right before the network (and the yaw negated), so one network serves both.
- ``angle``: ``(N, 2)`` the wanted gaze **change** (target - source) ``(pitch, yaw)`` in
  **degrees** in the crop's frame: pitch positive = up, yaw positive = toward crop +x.
- ``anchors`` (only with ``anchors=True``): ``(N, 7, 2)`` crop-pixel landmarks (outer corner,
  two upper-lid points, inner corner, two lower-lid points, iris centre), given to the coarse
  branch as 14 offset maps (DeepWarp's anchor maps; the landmarks tell the network where the
  iris and the lids are whatever the eye looks like, which carries over from renders to real
  eyes). The fine branch does without them (its input is full resolution: the cost).
- Output flow: ``(N, 2, 41, 51)`` **backward** warp in **crop pixels**, (x, y) order:
  ``out(u, v) = img(u + flow_x, v + flow_y)`` (bilinear, border clamped), exactly the
  ``WarpJob.flow`` convention, so the compositor can apply it at frame resolution.
- LCM (lightness correction module, ``lcm=True``): per-pixel softmax weights ``(w0, w1)`` mix
  the warped image with a learned palette colour: ``out = w0 warped + w1 palette``; returned as
  ``lcm_weight = w1`` ``(N, 1, 41, 51)`` and ``palette`` ``(3,)`` RGB in [0, 1]
  (``WarpJob.palette_mix``).

Architecture: the angle goes through Linear 2->16 -> ReLU -> Linear 16->16 -> ReLU and is
broadcast to 16 maps. The coarse branch runs at half resolution (average-pooled input) and
predicts a flow (tanh, times ``coarse_px``) that is upsampled to 41 x 51; the fine branch sees
the input, the coarsely warped input, the coarse flow and the angle maps and predicts a residual
flow (tanh, times ``fine_px``) and the LCM logits. Differences from the recipe, on purpose:
no batch norm (convolutions with bias: a two-process DDP run then equals a one-process run
exactly, and nothing needs folding at export), the coarse branch pools first (a quarter of the
cost), narrower layers (the 2 ms budget for two eyes), and the flow is in pixels rather than
[-1, 1] units.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CROP_H, CROP_W = 41, 51
N_ANCHORS = 7
#: Angles are divided by this before the embedding (keeps its input near [-1, 1]).
ANGLE_SCALE = 20.0


@dataclass
class GazeNetConfig:
    """Network hyper-parameters (saved in checkpoints and the exported metadata)."""

    width: int = 16  # channels of the coarse branch
    fine_width: int = 12  # channels of the fine branch
    coarse_px: float = 8.0  # largest coarse flow, crop pixels
    fine_px: float = 3.0  # largest residual flow, crop pixels
    fine_layers: int = 3  # 3x3 convolutions in the fine branch
    lcm: bool = True
    anchors: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def anchor_points(landmarks: torch.Tensor) -> torch.Tensor:
    """The 7 anchors ``(N, 7, 2)`` from the 19 crop landmarks ``(N, 19, 2)`` (upper lid 9,
    lower lid 9, iris centre; see :mod:`warpcam.training.gaze.render`)."""
    idx = [0, 3, 5, 8, 14, 12, 18]
    return landmarks[:, idx]


def _conv(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True))


class BroadcastConv(nn.Module):
    """``relu(conv(cat[x, broadcast(e)]))``, a ``k x k`` zero-padded convolution over the image
    channels and the broadcast embedding, computed without materialising the broadcast maps.

    The weight is that of one ``Conv2d(cx + ce, cout, k)``. A spatially constant input gives,
    at each pixel, the sum over the kernel taps that fall inside the image of ``W_tap e``; so
    the embedding's part is ``sum_taps mask_tap(y, x) (W_tap e)`` with ``mask_tap`` the in-bounds
    indicator of the tap: two tiny matrix products instead of a 16-channel convolution (exactly
    equal, and a third of the cost of the fine branch's first layer).
    """

    def __init__(self, cx: int, ce: int, cout: int, k: int, size: tuple):
        super().__init__()
        self.cx, self.ce, self.k = cx, ce, k
        self.conv = nn.Conv2d(cx + ce, cout, k, padding=k // 2)
        h, w = size
        r = k // 2
        pad = F.pad(torch.ones(1, 1, h, w), (r, r, r, r))
        # masks[tap, y * w + x] = 1 where pixel (y + dy - r, x + dx - r) of tap (dy, dx) is inside
        m = torch.stack([pad[0, 0, dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)])
        self.register_buffer("masks", m.reshape(k * k, h * w), persistent=False)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        wx = self.conv.weight[:, :self.cx]
        we = self.conv.weight[:, self.cx:].transpose(0, 1).reshape(self.ce, -1)  # (ce, cout*k*k)
        y = F.conv2d(x, wx, self.conv.bias, padding=self.k // 2)
        per_tap = (e @ we).reshape(n, -1, self.k * self.k)  # (n, cout, k*k)
        y = y + (per_tap @ self.masks).reshape(n, -1, h, w)
        return F.relu(y)


def base_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(1, 2, h, w)`` pixel-centre coordinates (x, y) of an ``h x w`` crop."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys])[None]


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp ``out(u, v) = img(u + flow_x, v + flow_y)``; flow in pixels ``(N, 2, h, w)``;
    bilinear, border clamped (``grid_sample(align_corners=True, padding_mode='border')``)."""
    n, _, h, w = img.shape
    g = base_grid(h, w, img.device, img.dtype) + flow
    gx = g[:, 0] * (2.0 / (w - 1)) - 1.0
    gy = g[:, 1] * (2.0 / (h - 1)) - 1.0
    return F.grid_sample(img, torch.stack([gx, gy], -1), mode="bilinear",
                         padding_mode="border", align_corners=True)


class DeepWarpGaze(nn.Module):
    """Coarse-to-fine DeepWarp gaze network (see the module docstring for shapes and units).

    ``forward(img, angle, anchors=None)`` returns a dict: ``flow`` (fine, pixels),
    ``coarse_flow``, ``coarse`` (input warped by the coarse flow), ``warped`` (by the fine
    flow), ``output`` (``warped`` after the LCM, or ``warped`` when ``lcm`` is off),
    ``lcm_weight`` (``(N, 1, h, w)``, zeros when off) and ``palette`` (``(3,)``).
    """

    def __init__(self, cfg: GazeNetConfig = GazeNetConfig()):
        super().__init__()
        self.cfg = cfg
        e = 16
        a = 2 * N_ANCHORS if cfg.anchors else 0
        c, f = cfg.width, cfg.fine_width
        self.embed = nn.Sequential(nn.Linear(2, e), nn.ReLU(inplace=True), nn.Linear(e, e),
                                   nn.ReLU(inplace=True))
        h, w, hh, hw = CROP_H, CROP_W, CROP_H // 2, CROP_W // 2
        self.coarse_in = BroadcastConv(3 + a, e, c, 3, (hh, hw))
        self.coarse = nn.Sequential(_conv(c, c, 3), _conv(c, c, 3), nn.Conv2d(c, 2, 1))
        self.fine_in = BroadcastConv(3 + 3 + 2, e, f, 3, (h, w))
        # Fixed-size constants, so the exported graph holds no index arithmetic: the sampling
        # grid in grid_sample units, and bilinear upsampling (align_corners=False) as two
        # matrix products, up_y (h x hh) and up_xt (hw x w).
        g = base_grid(h, w)[0].permute(1, 2, 0)
        self.register_buffer("grid_norm", g * torch.tensor([2 / (w - 1), 2 / (h - 1)]) - 1,
                             persistent=False)
        self.register_buffer("px_to_norm", torch.tensor([2 / (w - 1), 2 / (h - 1)]),
                             persistent=False)
        gh = base_grid(hh, hw)[0] * 2 + 0.5  # 2 x 2 block centres, full-resolution pixels
        self.register_buffer("grid_half", gh * self.px_to_norm[:, None, None] - 1,
                             persistent=False)
        self.register_buffer("up_y", F.interpolate(torch.eye(hh)[None, None], size=(h, hh),
                                                   mode="bilinear", align_corners=False)[0, 0],
                             persistent=False)
        self.register_buffer("up_xt", F.interpolate(torch.eye(hw)[None, None], size=(hw, w),
                                                    mode="bilinear", align_corners=False)[0, 0],
                             persistent=False)
        self.fine = nn.Sequential(*[_conv(f, f, 3) for _ in range(cfg.fine_layers - 1)])
        self.fine_flow = nn.Conv2d(f, 2, 1)
        if cfg.lcm:
            self.lcm_head = nn.Conv2d(f, 2, 1)
            with torch.no_grad():  # start with the palette weight near 0
                self.lcm_head.bias.copy_(torch.tensor([3.0, -3.0]))
            # sigmoid^-1 of a light sclera colour
            self.palette_logit = nn.Parameter(torch.tensor([1.5, 1.4, 1.3]))
        for m in (self.coarse[-1], self.fine_flow):  # start from the identity warp
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def _anchor_maps(self, anchors):
        """``(N, 14, h/2, w/2)`` anchor offset maps ``(p - x) / (w - 1)`` (x and y per anchor) at
        the coarse branch's pixels. The maps are linear in x, so their 2 x 2 average pool equals
        their value at each block's centre, ``2 j + 0.5``: computed there directly."""
        a = anchors * self.px_to_norm - 1  # grid_sample units, [-1, 1]
        d = (a[:, :, :, None, None] - self.grid_half[None, None]) * 0.5  # (N, 7, 2, hh, hw)
        return d.reshape(anchors.shape[0], 2 * N_ANCHORS, d.shape[-2], d.shape[-1])

    def _warp(self, img, flow):
        """:func:`warp` with the precomputed grid (crop size only)."""
        g = self.grid_norm + flow.permute(0, 2, 3, 1) * self.px_to_norm
        return F.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=True)

    def branches(self, img: torch.Tensor, angle: torch.Tensor, anchors=None) -> tuple:
        """``(coarse_flow, coarse image, fine flow, fine features)``."""
        cfg = self.cfg
        n, _, h, w = img.shape
        emb = self.embed(angle / ANGLE_SCALE)
        half = F.avg_pool2d(img, 2)
        if cfg.anchors:
            if anchors is None:
                raise ValueError("this model was built with anchors=True: pass anchors (N, 7, 2)")
            half = torch.cat([half, self._anchor_maps(anchors)], 1)
        cflow = torch.tanh(self.coarse(self.coarse_in(half, emb))) * cfg.coarse_px
        if (h, w) != (CROP_H, CROP_W):
            raise ValueError(f"img must be (N, 3, {CROP_H}, {CROP_W}), got {tuple(img.shape)}")
        cflow = self.up_y @ cflow @ self.up_xt
        coarse = self._warp(img, cflow)
        parts = [img, coarse, cflow * (1.0 / cfg.coarse_px)]
        feat = self.fine(self.fine_in(torch.cat(parts, 1), emb))
        flow = cflow + torch.tanh(self.fine_flow(feat)) * cfg.fine_px
        return cflow, coarse, flow, feat

    def lcm(self, feat: torch.Tensor) -> tuple:
        """``(palette weight (N, 1, h, w), palette (3,) RGB in [0, 1])``."""
        if self.cfg.lcm:  # 2-way softmax, second weight = sigmoid(l1 - l0)
            logits = self.lcm_head(feat)
            return (torch.sigmoid(logits[:, 1:2] - logits[:, 0:1]),
                    torch.sigmoid(self.palette_logit))
        return (torch.zeros_like(feat[:, :1]),
                torch.ones(3, dtype=feat.dtype, device=feat.device))

    def forward(self, img: torch.Tensor, angle: torch.Tensor, anchors=None) -> dict:
        cflow, coarse, flow, feat = self.branches(img, angle, anchors)
        warped = self._warp(img, flow)
        wts, palette = self.lcm(feat)
        output = (1 - wts) * warped + wts * palette[None, :, None, None] if self.cfg.lcm \
            else warped
        return dict(flow=flow, coarse_flow=cflow, coarse=coarse, warped=warped, output=output,
                    lcm_weight=wts, palette=palette)


class GazeInference(nn.Module):
    """What is exported: ``(img, angle[, anchors]) -> (flow, lcm_weight, palette)`` only (the
    compositor does the sampling at frame resolution). Shapes and units as in
    :class:`DeepWarpGaze`."""

    def __init__(self, net: DeepWarpGaze):
        super().__init__()
        self.net = net

    def forward(self, img, angle, anchors=None):
        _, _, flow, feat = self.net.branches(img, angle, anchors)
        wts, palette = self.net.lcm(feat)
        return flow, wts, palette


def apply_outputs(img: torch.Tensor, flow: torch.Tensor, lcm_weight: torch.Tensor,
                  palette: torch.Tensor) -> torch.Tensor:
    """Redirected crop from the exported outputs: ``(1 - w) warp(img, flow) + w palette``."""
    warped = warp(img, flow)
    return (1 - lcm_weight) * warped + lcm_weight * palette.reshape(1, 3, 1, 1)


def smoothness(flow: torch.Tensor) -> torch.Tensor:
    """Mean squared finite difference of the flow (pixels^2), the smoothness term."""
    dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    return (dx * dx).mean() + (dy * dy).mean()


def gaze_loss(out: dict, target: torch.Tensor, smooth_weight: float = 1e-3) -> tuple:
    """DeepWarp loss of the re-implementation, L2 on the coarse and the fine outputs, plus flow
    smoothness. Images in [0, 1]; the L2 terms are per-pixel means (x 255^2 = the evaluation's
    MSE on the 0-255 scale). Returns ``(total, parts dict of floats)``."""
    l_c = F.mse_loss(out["coarse"], target)
    l_f = F.mse_loss(out["output"], target)
    l_s = smoothness(out["flow"])
    total = l_c + l_f + smooth_weight * l_s
    return total, dict(coarse=l_c.detach(), fine=l_f.detach(), smooth=l_s.detach())
