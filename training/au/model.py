"""Fine-grained AU editing networks (junleen/Expression-manipulator, Ling et al., "Toward
Fine-grained Facial Expression Manipulation", ECCV 2020, Sec. 3; ``reference/seed-recipes.md``
Sec. 3), with GANimation's attention output (Pumarola et al., ECCV 2018, Sec. 4) as an option.

Convention block:

- Images: ``(N, 3, S, S)`` float32 **RGB in [-1, 1]** (the seed's normalisation), the aligned
  face of :func:`warpcam.training.data.align.align_affine` at ``S`` = 128 (recipe) or 96 px
  (CPU configuration); ``S`` must be a multiple of 16.
- Condition: ``(N, C)`` **relative** AUs, ``desired - real``, each on OpenFace's 0-5 intensity
  scale divided by :data:`AU_SCALE` (= 5, so 1.0 is the whole scale). ``C`` = the AU
  estimator's 17 AUs (:data:`AU_NAMES`, OpenFace 2.0 order).
- Generator :class:`UNetMSFGenerator` (``UNet_MSF_Generator``): conv7 stem, four 4x4 s2
  down-convs (widths ngf, 2, 4, 8, 8 ngf), the condition tiled and concatenated at the
  bottleneck (conv3) and inside each multi-scale fusion unit (:class:`MultiScaleFusion`,
  skip3 @ S/8, skip2 @ S/4, skip1 @ S/2, chained from the bottleneck), a deconv decoder and a
  conv7 head. InstanceNorm (affine), LeakyReLU 0.01 in the encoder, ReLU in the decoder; conv
  weights N(0, 0.02).
- Output, ``attention=False`` (the seed): the edited image ``tanh(conv7)``.
  ``attention=True`` (GANimation): a colour ``C = tanh(conv7)`` and an attention mask
  ``A = sigmoid(conv7)`` (``(N, 1, S, S)``; 1 keeps the input pixel) with
  ``out = A * x + (1 - A) * C``.
- Flow (``flow=True``, beyond both papers; DESIGN.md "Generators at low resolution"): a
  backward warp ``F`` (``(N, 2, S, S)``, crop pixels, x then y; ``out(u, v) = x(u + F_x,
  v + F_y)``) of the input replaces ``x`` in the blend: ``out = A * warp(x, F) + (1 - A) * C``
  (or ``warp(x, F)`` without attention). ``F = flow_max * S * tanh(B c + N(y))``, bilinearly
  upsampled from ``S/4``: ``B`` is a learned **condition-linear** basis (one ``2 x S/8 x S/8``
  field per AU; the faces are aligned, so an AU's displacement is much the same field on every
  face and a short CPU run learns it), ``N`` a 3x3 conv on the decoder's ``S/4`` features
  (initialised to 0, the per-face correction). Geometric AUs (brows, lids, lip corners) are
  displacements of the face's own pixels, which keep the frame's detail at any size.
- Critic :class:`Critic` (``Discriminator_Plus``): conv5 s2 then conv4 s2 layers doubling
  the width (capped at ``16 ndf``) down to 2 x 2 (128 px: six stride-2 layers; 96 px: 3 x 3),
  LeakyReLU 0.01, no normalisation, no bias; a 3x3 WGAN critic head (a patch map) and an AU
  head (a conv over the whole final map) that regresses **absolute** AUs (``/ AU_SCALE``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

#: The AU estimator's AUs, in OpenFace 2.0 order (``warpcam.realtime.au.AU_NAMES``; repeated,
#: since training does not import the runtime floor; tests check that they agree).
AU_NAMES = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14",
            "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")
#: OpenFace's 0-5 intensities are divided by this (the seed's ``aus / 5``).
AU_SCALE = 5.0


@dataclass
class AUNetConfig:
    """Hyper-parameters (saved in checkpoints and the exported metadata)."""

    size: int = 128
    ngf: int = 64
    ndf: int = 64
    cond_nc: int = len(AU_NAMES)
    attention: bool = False
    flow: bool = False
    #: largest flow displacement, a share of the crop side (``S``)
    flow_max: float = 0.08

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AUNetConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=True)


def conv(ci: int, co: int, k: int, s: int = 1, act: str = "lrelu") -> nn.Sequential:
    """``conv k x k (stride s, 'same'-style padding) -> InstanceNorm -> activation``."""
    p = (k - 1) // 2 if s == 1 else (k - s) // 2
    if s == 1 and k % 2 == 0:
        raise ValueError("even kernels only with stride 2")
    a = nn.LeakyReLU(0.01, inplace=True) if act == "lrelu" else nn.ReLU(inplace=True)
    return nn.Sequential(nn.Conv2d(ci, co, k, s, p, bias=False), _norm(co), a)


def deconv(ci: int, co: int) -> nn.Sequential:
    """``deconv 4 x 4 stride 2 (x2 size) -> InstanceNorm -> ReLU``."""
    return nn.Sequential(nn.ConvTranspose2d(ci, co, 4, 2, 1, bias=False), _norm(co),
                         nn.ReLU(inplace=True))


def tile(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The ``(N, C)`` condition as ``(N, C, H, W)`` maps the size of ``like``."""
    return c[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


class FusionBlock(nn.Module):
    """Exchange between a high-res ``hr`` (``ci`` ch) and a low-res ``lr`` (``cl`` ch, half the
    size): ``hr' = [conv3(hr), deconv4(lr)]`` (ci ch), ``lr' = [conv4 s2(hr), conv3(lr)]``
    (cl ch)."""

    def __init__(self, ci: int, cl: int):
        super().__init__()
        self.hh = conv(ci, ci // 2, 3)
        self.lh = deconv(cl, ci - ci // 2)
        self.hl = conv(ci, cl // 2, 4, 2)
        self.ll = conv(cl, cl - cl // 2, 3)

    def forward(self, hr, lr):
        return (torch.cat([self.hh(hr), self.lh(lr)], 1),
                torch.cat([self.hl(hr), self.ll(lr)], 1))


class MultiScaleFusion(nn.Module):
    """The seed's ``MultiScaleFusion(in, low, out)`` skip unit: (1) ``hr = conv5([hr, c])``;
    (2) a :class:`FusionBlock`; (3) the low-res result deconvolved to ``min(low, out)`` ch at
    the high resolution; (4) ``[conv3 (out/2) | conv5 (out/2)]`` of ``[hr, that]``."""

    def __init__(self, ci: int, cl: int, co: int, cond_nc: int):
        super().__init__()
        self.inp = conv(ci + cond_nc, ci, 5)
        self.fuse = FusionBlock(ci, cl)
        up = min(cl, co)
        self.up = deconv(cl, up)
        self.o3 = conv(ci + up, co // 2, 3)
        self.o5 = conv(ci + up, co - co // 2, 5)

    def forward(self, hr, lr, c):
        hr = self.inp(torch.cat([hr, tile(c, hr)], 1))
        hr, lr = self.fuse(hr, lr)
        z = torch.cat([hr, self.up(lr)], 1)
        return torch.cat([self.o3(z), self.o5(z)], 1)


class UNetMSFGenerator(nn.Module):
    """``G(x, c)``: ``x`` ``(N, 3, S, S)`` RGB [-1, 1], ``c`` ``(N, C)`` relative AUs ->
    dict ``output`` (N, 3, S, S) [-1, 1] and, with attention, ``color`` (N, 3, S, S) [-1, 1]
    and ``attention`` (N, 1, S, S) [0, 1] (module docstring)."""

    def __init__(self, cfg: AUNetConfig):
        super().__init__()
        if cfg.size % 16:
            raise ValueError(f"size {cfg.size} is not a multiple of 16")
        self.cfg = cfg
        g, c = cfg.ngf, cfg.cond_nc
        self.e0 = conv(3, g, 7)
        self.e1 = conv(g, 2 * g, 4, 2)
        self.e2 = conv(2 * g, 4 * g, 4, 2)
        self.e3 = conv(4 * g, 8 * g, 4, 2)
        self.e4 = conv(8 * g, 8 * g, 4, 2)
        self.bottleneck = conv(8 * g + c, 8 * g, 3, act="relu")
        self.skip3 = MultiScaleFusion(8 * g, 8 * g, 8 * g, c)
        self.skip2 = MultiScaleFusion(4 * g, 8 * g, 4 * g, c)
        self.skip1 = MultiScaleFusion(2 * g, 4 * g, 2 * g, c)
        self.d4 = deconv(8 * g, 8 * g)
        self.d3 = deconv(16 * g, 4 * g)
        self.d2 = deconv(8 * g, 2 * g)
        self.d1 = deconv(4 * g, g)
        self.color = nn.Conv2d(g, 3, 7, 1, 3, bias=False)
        self.att = nn.Conv2d(g, 1, 7, 1, 3, bias=False) if cfg.attention else None
        self.apply(_init)
        if cfg.flow:
            self.flow_basis = nn.Parameter(torch.zeros(c, 2, cfg.size // 8, cfg.size // 8))
            self.flow_net = nn.Conv2d(4 * g, 2, 3, 1, 1)
            nn.init.zeros_(self.flow_net.weight)
            nn.init.zeros_(self.flow_net.bias)
        else:
            self.flow_basis = self.flow_net = None

    def flow_field(self, c: torch.Tensor, y3: torch.Tensor) -> torch.Tensor:
        """The backward warp ``(N, 2, S, S)`` in crop pixels (module docstring) from the
        condition ``c`` ``(N, C)`` and the decoder's ``S/4`` features ``y3``."""
        s = self.cfg.size
        lin = torch.einsum("nc,cxhw->nxhw", c, self.flow_basis)
        raw = F.interpolate(lin, size=y3.shape[-2:], mode="bilinear",
                            align_corners=False) + self.flow_net(y3)
        f = torch.tanh(raw) * (self.cfg.flow_max * s)
        return F.interpolate(f, size=(s, s), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> Dict[str, torch.Tensor]:
        h0 = self.e0(x)
        h1 = self.e1(h0)
        h2 = self.e2(h1)
        h3 = self.e3(h2)
        h4 = self.e4(h3)
        b = self.bottleneck(torch.cat([h4, tile(c, h4)], 1))
        s3 = self.skip3(h3, b, c)
        s2 = self.skip2(h2, s3, c)
        s1 = self.skip1(h1, s2, c)
        y = self.d4(b)
        y3 = self.d3(torch.cat([y, s3], 1))
        y = self.d2(torch.cat([y3, s2], 1))
        y = self.d1(torch.cat([y, s1], 1))
        col = torch.tanh(self.color(y))
        extra, src = {}, x
        if self.flow_net is not None:
            fl = self.flow_field(c, y3)
            src = warp(x, fl)
            extra = dict(flow=fl, warped=src)
            if self.att is None:
                return dict(output=src, color=col, **extra)
        if self.att is None:
            return dict(output=col)
        a = torch.sigmoid(self.att(y))
        return dict(output=a * src + (1 - a) * col, color=col, attention=a, **extra)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out(u, v) = x(u + flow_x, v + flow_y)`` (bilinear, border
    replicated); ``x`` ``(N, C, H, W)``, ``flow`` ``(N, 2, H, W)`` in pixels, pixel centres at
    integers."""
    h, w = x.shape[-2:]
    ys = torch.arange(h, dtype=x.dtype, device=x.device)
    xs = torch.arange(w, dtype=x.dtype, device=x.device)
    gx = (xs[None, None, :] + flow[:, 0]) * (2.0 / w) + (1.0 / w - 1.0)
    gy = (ys[None, :, None] + flow[:, 1]) * (2.0 / h) + (1.0 / h - 1.0)
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear",
                         padding_mode="border", align_corners=False)


class Critic(nn.Module):
    """``D(x) -> (critic (N, 1, k, k), aus (N, C))`` (module docstring)."""

    def __init__(self, cfg: AUNetConfig):
        super().__init__()
        layers, ci, co, s = [], 3, cfg.ndf, cfg.size
        k = 5
        while s > 3:
            layers += [nn.Conv2d(ci, co, k, 2, (k - 1) // 2 if k == 5 else 1, bias=False),
                       nn.LeakyReLU(0.01, inplace=True)]
            k = 4
            ci, co, s = co, min(co * 2, 16 * cfg.ndf), s // 2
        self.main = nn.Sequential(*layers)
        self.final = s
        self.critic = nn.Conv2d(ci, 1, 3, 1, 1, bias=False)
        self.aus = nn.Conv2d(ci, cfg.cond_nc, s, bias=False)
        self.apply(_init)

    def forward(self, x):
        h = self.main(x)
        return self.critic(h), self.aus(h).flatten(1)


class AUGAN(nn.Module):
    """``G`` and ``D`` in one module (one checkpoint)."""

    def __init__(self, cfg: AUNetConfig):
        super().__init__()
        self.cfg = cfg
        self.G = UNetMSFGenerator(cfg)
        self.D = Critic(cfg)


class AUInference(nn.Module):
    """The exported program: ``(img (N, 3, S, S) RGB [0, 1], rel_aus (N, C) /AU_SCALE) ->
    (attention (N, 1, S, S) [0, 1], residual (N, 3, S, S) = color - img in [0, 1] units)``.
    Without attention the mask is all zeros and the residual ``output - img``. The effect
    composites ``frame + (1 - attention) * upsample(residual)`` (DESIGN.md: residuals keep the
    frame's detail).

    With a flow (``cfg.flow``) a third output ``flow (N, 2, S, S)``, the backward warp in crop
    pixels, and the composite is ``attention * warp(frame, flow) + (1 - attention) * (frame +
    residual)`` (without attention: the mask is all ones, a pure warp)."""

    def __init__(self, g: UNetMSFGenerator):
        super().__init__()
        self.g = g

    def forward(self, img, rel):
        x = img * 2 - 1
        out = self.g(x, rel)
        if "flow" in out:
            if "attention" not in out:
                return torch.ones_like(x[:, :1]), torch.zeros_like(x), out["flow"]
            return out["attention"], (out["color"] - x) * 0.5, out["flow"]
        if "attention" in out:
            return out["attention"], (out["color"] - x) * 0.5
        return torch.zeros_like(x[:, :1]), (out["output"] - x) * 0.5


# ------------------------------------------------------------------------------------------
# Losses (recipe weights: AU 150, reconstruction 30, cycle 30, TV 1e-5, GP 10)
# ------------------------------------------------------------------------------------------
@dataclass
class LossWeights:
    adv: float = 1.0
    au: float = 150.0
    rec: float = 30.0
    cyc: float = 30.0
    tv: float = 1e-5
    gp: float = 10.0
    #: GANimation's attention regularisers (Sec. 4.2 and its ``lambda_mask`` 0.1 /
    #: ``lambda_mask_smooth`` 1e-5): ``mean(A)`` keeps the mask from saturating at 1 (no
    #: edit), TV keeps it smooth.
    att: float = 0.1
    att_tv: float = 1e-5
    #: beyond both papers: ``L1(C(x, 0), x)``, the colour output itself reproduces the input at
    #: a zero condition. Without it the colour is only trained where the mask opens, and a
    #: short run's mask that saturates near 1 leaves a colour of noise (rainbow lips where it
    #: opens); 0 is the recipe.
    color_rec: float = 0.0
    #: with a flow output (beyond both papers): ``mean |F|`` in crop pixels on both passes,
    #: the flow's counterpart of GANimation's mask sparsity (the AU head's gradient reaches
    #: every pixel; without it the flow drifts everywhere), and the TV of ``F`` (smoothness).
    flow: float = 1.0
    flow_tv: float = 1e-4
    #: the landmark term of the flow (:func:`warpcam.training.au.geometry.geo_loss`, beyond both
    #: papers; 0 = off)
    geo: float = 0.0


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of absolute neighbour differences per image, averaged over the batch (the seed's
    TV term)."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().sum((1, 2, 3))
            + (x[..., :, 1:] - x[..., :, :-1]).abs().sum((1, 2, 3))).mean()


def gradient_penalty(D: Critic, real: torch.Tensor, fake: torch.Tensor,
                     eps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017, Sec. 4): ``mean((||grad_x D(x_hat)||_2 - 1)^2)`` on
    ``x_hat = eps real + (1 - eps) fake``, ``eps ~ U(0, 1)`` per sample."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    xh = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    crit, _ = D(xh)
    g, = torch.autograd.grad(crit.sum(), xh, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def d_losses(net: AUGAN, x: torch.Tensor, real_au: torch.Tensor, fake: torch.Tensor,
             w: LossWeights) -> Dict[str, torch.Tensor]:
    """The critic's loss ``-mean D(x) + mean D(fake) + 150 MSE(AU_D(x), real)`` (``d``), and
    ``gp`` separately (the seed takes it as a second Adam step)."""
    cr, au = net.D(x)
    cf, _ = net.D(fake.detach())
    adv = -cr.mean() + cf.mean()
    au_l = F.mse_loss(au, real_au)
    return dict(d=w.adv * adv + w.au * au_l, d_adv=adv, d_au=au_l)


def g_losses(net: AUGAN, x: torch.Tensor, rel: torch.Tensor, desired: torch.Tensor,
             w: LossWeights, geo: Optional[dict] = None) -> Dict[str, torch.Tensor]:
    """``-mean D(G(x, d)) + 150 MSE(AU_D(fake), desired) + 30 L1(G(x, 0), x)
    + 30 L1(G(G(x, d), -d), x) + 1e-5 TV(fake)`` and, with attention, GANimation's mask terms
    (``mean(A)`` on both passes, TV of A); with a flow, ``mean |F|`` and TV of F on both
    passes; with ``geo`` (the landmark dict of
    :meth:`~warpcam.training.au.data.AUFaces.batch`) and ``w.geo``, the landmark term of the
    flow (:func:`warpcam.training.au.geometry.geo_loss`)."""
    out = net.G(x, rel)
    fake = out["output"]
    cf, au = net.D(fake)
    adv = -cf.mean()
    au_l = F.mse_loss(au, desired)
    rec_out = net.G(x, torch.zeros_like(rel))
    rec = (rec_out["output"] - x).abs().mean()
    cyc_out = net.G(fake, -rel)
    cyc = (cyc_out["output"] - x).abs().mean()
    tv = total_variation(fake)
    g = w.adv * adv + w.au * au_l + w.rec * rec + w.cyc * cyc + w.tv * tv
    terms = dict(g_adv=adv, g_au=au_l, rec=rec, cyc=cyc, tv=tv, fake=fake)
    if "attention" in out:
        a1, a2 = out["attention"], cyc_out["attention"]
        att = a1.mean() + a2.mean()
        att_tv = total_variation(a1) + total_variation(a2)
        g = g + w.att * att + w.att_tv * att_tv
        terms.update(att=att, att_tv=att_tv, att_mean=a1.mean().detach())
        if w.color_rec:
            color_rec = (rec_out["color"] - x).abs().mean()
            g = g + w.color_rec * color_rec
            terms["color_rec"] = color_rec
    if "flow" in out:
        f1, f2 = out["flow"], cyc_out["flow"]
        fl = f1.abs().mean() + f2.abs().mean()
        fl_tv = total_variation(f1) + total_variation(f2)
        g = g + w.flow * fl + w.flow_tv * fl_tv
        terms.update(flow=fl, flow_tv=fl_tv, flow_mean=f1.abs().mean().detach())
        if geo is not None and w.geo:
            from warpcam.training.au.geometry import geo_loss
            gl = geo_loss(f1, geo["points"], geo["params"], geo["xy"], geo["flip"], rel,
                          geo.get("valid"))
            g = g + w.geo * gl["geo"]
            terms.update(geo=gl["geo"], geo_change=gl["geo_change"])
    terms["g"] = g
    return terms
