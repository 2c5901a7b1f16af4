"""DeepWarp smile networks (ddtm/deep-smile-warp, ``reference/seed-recipes.md`` Sec. 1),
re-implemented from the recipe's facts.

Convention block:

- Images: ``(N, 3, 64, 64)`` float32 **RGB in [0, 1]**, the aligned face of
  :func:`warpcam.training.data.align.align_affine` at 64 px (template: eye centres at
  (0.35, 0.38) / (0.65, 0.38), mouth centre (0.50, 0.71) of the crop side).
- ``delta``: ``(N, 1)``; +1 adds a smile, -1 removes it. Training uses the seed's rule
  ``delta = 1 - 2 src`` (labels in {0, 1}, ``dst = src + delta``).
- Flow: ``(N, 2, 64, 64)`` **backward** warp in **crop pixels**, (x, y) order:
  ``out(u, v) = img(u + flow_x, v + flow_y)``, bilinear, border clamped (the
  ``WarpJob.flow`` convention). The seed's flow is ``tanh * 0.1`` in grid units
  (align-corners, so ``0.1 * 63 / 2 = 3.15`` px at most): here ``tanh * flow_scale * 31.5`` px.
- LCM: ``lcm_weight`` ``(N, 1, 64, 64)`` = second softmax weight of channels 2-3,
  ``palette`` ``(3,)`` = sigmoid of a trainable 3-vector; ``out = (1 - w) warped + w palette``.

T (Transformer5 + ConvSrcMs5): delta -> Linear(1, e) -> ReLU -> Linear(e, e) -> ReLU; three
scales 16 / 32 / 64, each a stack of blocks ``conv(cat[x, broadcast(emb)]) -> BN -> ReLU``
(5x5, 3x3, 3x3, 1x1; the embedding is concatenated before **every** block) and a top 1x1 conv
(bias, init N(0, 0.01), bias 0.01). Scale 16 reads ``avgpool4(x - mu)`` and gives 8 maps ->
tanh -> nearest x2 -> 3x3 box blur; scale 32 reads ``[avgpool2(x - mu), that]`` and does the
same; scale 64 reads ``[x - mu, that]`` and gives 4 maps: flow (2) and LCM logits (2). ``mu`` is
the per-pixel mean of the training images (a buffer, exported with the program); the sampler
reads the raw image. Options (seed flags, off by default): ``anchors`` (offset maps of K
landmarks in crop pixels, ``2 K`` channels, added to every scale's input) and ``location``
(two coordinate channels in [-1, 1]).

D and A (createAEncoder): one encoder, **weights shared**, batch-norm layers separate per head
(the Lua ``clone`` shares parameters, not BN statistics); SpatialDropout 0.05, 5x5 s2 convs
with LeakyReLU 0.02 and BN, SpatialDropout 0.5, a 4x4 valid conv to 1 x 1, Linear, Dropout;
heads Linear -> 1 logit each (the sigmoid is inside the BCE-with-logits loss, same value).

Widths: the recipe's are the defaults (T 32/96/128/128, encoder 64/128/256/256/512/512); the
CPU run in ``train.py``'s docstring uses narrower ones (``t_widths``, ``d_width_mult``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZE = 64
#: The seed's flow scale in grid units (``tanh * 0.1``).
FLOW_SCALE = 0.1


@dataclass
class SmileNetConfig:
    """Hyper-parameters (saved in checkpoints and the exported metadata)."""

    delta_vec: int = 4
    t_widths: Tuple[int, ...] = (32, 96, 128, 128)
    d_widths: Tuple[int, ...] = (64, 128, 256, 256, 512, 512)
    flow_scale: float = FLOW_SCALE
    palette_size: int = 1
    anchors: int = 0  # number of anchor landmarks (0: off)
    location: bool = False
    lcm: bool = True
    #: beyond the seed: confine flow and LCM to the lower face (rows below ``lower_face`` of
    #: the crop side, smoothstep over 0.1 of it; 0 = off). 0.45 starts below the eyes (0.38).
    lower_face: float = 0.0
    #: beyond the seed: a 2-channel hint, the landmark smile's flow at ``sign(delta)`` in crop
    #: pixels (``(N, 2, 64, 64)``, backward warp (x, y)), added to every scale's input
    #: (average-pooled to the scale, divided by 4).
    hint: bool = False
    #: beyond the seed: smooth the flow and the LCM weight with a ``flow_blur`` x
    #: ``flow_blur`` box filter applied twice (replicated border; 0 = off). The seed's top
    #: scale can make per-pixel flow patterns that fool A and tear the lips; a smooth field
    #: cannot.
    flow_blur: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["t_widths"], d["d_widths"] = list(self.t_widths), list(self.d_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SmileNetConfig":
        d = dict(d)
        for k in ("t_widths", "d_widths"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class EmbBlock(nn.Module):
    """``relu(bn(conv(cat[x, broadcast(e)])))``, no conv bias (recipe)."""

    def __init__(self, cin: int, ce: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(cin + ce, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")

    def forward(self, x, e):
        n, _, h, w = x.shape
        eb = e[:, :, None, None].expand(n, e.shape[1], h, w)
        return F.relu(self.bn(self.conv(torch.cat([x, eb], 1))))


class ScaleNet(nn.Module):
    """One scale of ConvSrcMs5: blocks 5x5, 3x3, 3x3, 1x1 with the embedding in each, top 1x1."""

    def __init__(self, cin: int, ce: int, widths, cout: int):
        super().__init__()
        ks = (5, 3, 3, 1)
        blocks, c = [], cin
        for k, w in zip(ks, widths):
            blocks.append(EmbBlock(c, ce, w, k))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.top = nn.Conv2d(c, cout, 1)
        nn.init.normal_(self.top.weight, 0.0, 0.01)
        nn.init.constant_(self.top.bias, 0.01)

    def forward(self, x, e):
        for b in self.blocks:
            x = b(x, e)
        return self.top(x)


def base_grid(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """``(1, h, w, 2)`` identity sampling grid in grid_sample units (align_corners=True), (x, y)."""
    ys = torch.linspace(-1, 1, h, dtype=dtype)
    xs = torch.linspace(-1, 1, w, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)[None]


def warp(img: torch.Tensor, flow_px: torch.Tensor) -> torch.Tensor:
    """Backward warp, flow in crop pixels (x, y), bilinear, border clamped."""
    n, _, h, w = img.shape
    scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=img.dtype, device=img.device)
    g = base_grid(h, w, img.dtype).to(img.device) + flow_px.permute(0, 2, 3, 1) * scale
    return F.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=True)


def anchor_maps(anchors: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 2K, size, size)`` offset maps ``(p - x) / 63`` of K anchors given in 64-px crop
    pixels ``(N, K, 2)``, sampled at the pixel centres of a ``size`` grid over the same crop."""
    n, k, _ = anchors.shape
    c = (torch.arange(size, dtype=anchors.dtype, device=anchors.device) + 0.5) * (SIZE / size) - 0.5
    dx = anchors[:, :, 0, None, None] - c[None, None, None, :]
    dy = anchors[:, :, 1, None, None] - c[None, None, :, None]
    dx = dx.expand(n, k, size, size)
    dy = dy.expand(n, k, size, size)
    return (torch.stack([dx, dy], 2) / (SIZE - 1)).reshape(n, 2 * k, size, size)


def location_maps(n: int, size: int, dtype, device) -> torch.Tensor:
    g = torch.linspace(-1, 1, size, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([gx, gy])[None].expand(n, 2, size, size)


class Transformer(nn.Module):
    """T: ``forward(img, delta, anchors=None) -> dict(flow, lcm_weight, palette, warped, output)``
    (module docstring)."""

    def __init__(self, cfg: SmileNetConfig = SmileNetConfig()):
        super().__init__()
        self.cfg = cfg
        e = cfg.delta_vec
        self.embed = nn.Sequential(nn.Linear(1, e), nn.ReLU(), nn.Linear(e, e), nn.ReLU())
        for m in self.embed:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        extra = 2 * cfg.anchors + (2 if cfg.location else 0) + (2 if cfg.hint else 0)
        self.s16 = ScaleNet(3 + extra, e, cfg.t_widths, 8)
        self.s32 = ScaleNet(3 + 8 + extra, e, cfg.t_widths, 8)
        self.s64 = ScaleNet(3 + 8 + extra, e, cfg.t_widths, 4)
        self.register_buffer("mu", torch.full((1, 3, SIZE, SIZE), 0.5))
        self.palette_logit = nn.Parameter(torch.empty(3).uniform_(-3 ** 0.5, 3 ** 0.5))
        self.px = cfg.flow_scale * (SIZE - 1) / 2.0
        if cfg.lower_face > 0:
            v = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE
            r = ((v - cfg.lower_face) / 0.1).clamp(0, 1)
            m = (r * r * (3 - 2 * r))[None, None, :, None].expand(1, 1, SIZE, SIZE)
        else:
            m = torch.ones(1, 1, SIZE, SIZE)
        self.register_buffer("region", m.contiguous(), persistent=False)

    def _extra(self, n, size, anchors, hint, ref):
        parts = []
        if self.cfg.anchors:
            if anchors is None:
                raise ValueError(f"this model takes anchors (N, {self.cfg.anchors}, 2)")
            parts.append(anchor_maps(anchors.to(ref.dtype), size))
        if self.cfg.location:
            parts.append(location_maps(n, size, ref.dtype, ref.device))
        if self.cfg.hint:
            if hint is None:
                raise ValueError(f"this model takes a hint (N, 2, {SIZE}, {SIZE})")
            h = hint.to(ref.dtype)
            if size != SIZE:
                h = F.avg_pool2d(h, SIZE // size)
            parts.append(h * 0.25)
        return parts

    def heads(self, img: torch.Tensor, delta: torch.Tensor, anchors=None, hint=None) -> tuple:
        """``(flow px (N, 2, 64, 64), lcm_weight (N, 1, 64, 64), palette (3,))``."""
        n = img.shape[0]
        e = self.embed(delta.reshape(n, 1).to(img.dtype))
        x = img - self.mu
        x16 = F.avg_pool2d(x, 4)
        o = torch.tanh(self.s16(torch.cat([x16] + self._extra(n, 16, anchors, hint, x), 1), e))
        o = F.avg_pool2d(F.interpolate(o, scale_factor=2.0, mode="nearest"), 3, 1, 1,
                         count_include_pad=False)
        x32 = F.avg_pool2d(x, 2)
        o = torch.tanh(self.s32(torch.cat([x32, o] + self._extra(n, 32, anchors, hint, x), 1),
                                e))
        o = F.avg_pool2d(F.interpolate(o, scale_factor=2.0, mode="nearest"), 3, 1, 1,
                         count_include_pad=False)
        o = self.s64(torch.cat([x, o] + self._extra(n, 64, anchors, hint, x), 1), e)
        flow = torch.tanh(o[:, 0:2]) * self.px
        if self.cfg.flow_blur:
            flow = self._smooth(flow)
        if self.cfg.lower_face > 0:
            flow = flow * self.region
        if self.cfg.lcm:
            wts = torch.sigmoid(o[:, 3:4] - o[:, 2:3])  # softmax over (2, 3), second weight
            if self.cfg.flow_blur:
                wts = self._smooth(wts)
            if self.cfg.lower_face > 0:
                wts = wts * self.region
        else:
            wts = torch.zeros_like(o[:, 2:3])
        return flow, wts, torch.sigmoid(self.palette_logit)

    def _smooth(self, t: torch.Tensor) -> torch.Tensor:
        k = self.cfg.flow_blur
        for _ in range(2):
            t = F.avg_pool2d(F.pad(t, (k // 2, k - 1 - k // 2) * 2, mode="replicate"), k, 1)
        return t

    def forward(self, img, delta, anchors=None, hint=None) -> dict:
        flow, wts, pal = self.heads(img, delta, anchors, hint)
        warped = warp(img, flow)
        out = (1 - wts) * warped + wts * pal[None, :, None, None]
        return dict(flow=flow, lcm_weight=wts, palette=pal, warped=warped, output=out)


class SharedEncoder(nn.Module):
    """The D/A encoder with shared weights and per-head batch norm (``branch`` 0 = D, 1 = A)."""

    def __init__(self, widths=(64, 128, 256, 256, 512, 512), branches: int = 2):
        super().__init__()
        c1, c2, c3, c4, c5, c6 = widths
        self.convs = nn.ModuleList([nn.Conv2d(3, c1, 5, 2, 2), nn.Conv2d(c1, c2, 5, 2, 2),
                                    nn.Conv2d(c2, c3, 5, 2, 2), nn.Conv2d(c3, c4, 5, 2, 2),
                                    nn.Conv2d(c4, c5, 4)])
        self.fc = nn.Linear(c5, c6, bias=False)
        bns = []
        for _ in range(branches):
            bns.append(nn.ModuleList([nn.BatchNorm2d(c2), nn.BatchNorm2d(c3), nn.BatchNorm2d(c4),
                                      nn.BatchNorm2d(c5), nn.BatchNorm1d(c6)]))
        self.bns = nn.ModuleList(bns)
        self.out_dim = c6

    def forward(self, x, branch: int):
        bn = self.bns[branch]
        act = lambda t: F.leaky_relu(t, 0.02)  # noqa: E731
        x = F.dropout2d(x, 0.05, self.training)
        x = act(self.convs[0](x))
        x = act(bn[0](self.convs[1](x)))
        x = F.dropout2d(act(bn[1](self.convs[2](x))), 0.5, self.training)
        x = F.dropout2d(act(bn[2](self.convs[3](x))), 0.5, self.training)
        x = act(bn[3](self.convs[4](x))).flatten(1)
        x = F.dropout(x, 0.5, self.training)
        x = F.dropout(act(bn[4](self.fc(x))), 0.5, self.training)
        return x


class Critics(nn.Module):
    """D and A over the shared encoder: ``d(x)`` and ``a(x)`` return logits ``(N,)``."""

    def __init__(self, cfg: SmileNetConfig = SmileNetConfig()):
        super().__init__()
        self.encoder = SharedEncoder(cfg.d_widths)
        self.d_head = nn.Linear(self.encoder.out_dim, 1)
        self.a_head = nn.Linear(self.encoder.out_dim, 1)

    def d(self, x):
        return self.d_head(self.encoder(x, 0))[:, 0]

    def a(self, x):
        return self.a_head(self.encoder(x, 1))[:, 0]


class SmileGAN(nn.Module):
    """T + (D, A) as one module (one checkpoint, one optimiser)."""

    def __init__(self, cfg: SmileNetConfig = SmileNetConfig()):
        super().__init__()
        self.cfg = cfg
        self.T = Transformer(cfg)
        self.C = Critics(cfg)


LOSS_NAMES = ("d", "g", "a_real", "a_fake")


def losses(net: SmileGAN, x: torch.Tensor, src: torch.Tensor, anchors=None, hint=None,
           attr_margin: Optional[float] = None) -> dict:
    """The four loss terms of TGAN.lua on a batch of real faces ``x`` with labels ``src`` in
    {0, 1}: every image goes to the opposite class (``delta = 1 - 2 src``, ``dst = src + delta``).
    D and A see the 2B batch ``[x ; x_hat]``. Returns the terms and ``fake``.

    Beyond the seed: ``attr_margin`` (``m``) caps A-on-fake: with ``z`` = A's logit signed
    toward the target class, the term is ``softplus(-min(z, m))``, so T is no longer pushed once
    A is sure (``z > m``; the seed's BCE keeps rewarding an ever stronger edit); ``rec_l1`` is
    the mean absolute change ``|x_hat - x|`` (the identity/reconstruction penalty); ``hint_l1``
    the mean absolute difference (px) between T's flow and the hint (the flow itself without
    one): the landmark smile as the prior T departs from."""
    b = x.shape[0]
    src = src.to(x.dtype).reshape(b)
    delta = 1.0 - 2.0 * src
    dst = src + delta
    tout = net.T(x, delta[:, None], anchors, hint)
    fake = tout["output"]
    both = torch.cat([x, fake], 0)
    dl = net.C.d(both)
    al = net.C.a(both)
    real_t = torch.cat([torch.ones(b), torch.zeros(b)]).to(x)
    bce = F.binary_cross_entropy_with_logits
    return dict(
        d=bce(dl, real_t, reduction="sum") / (2 * b),
        g=bce(dl[b:], torch.ones(b, device=x.device), reduction="sum") / (2 * b),
        a_real=bce(al[:b], src, reduction="sum") / b,
        a_fake=(bce(al[b:], dst, reduction="sum") / b if attr_margin is None else
                F.softplus(-(al[b:] * (2 * dst - 1)).clamp(max=attr_margin)).sum() / b),
        rec_l1=(fake - x).abs().mean(),
        hint_l1=(tout["flow"] - (hint if hint is not None else 0.0)).abs().mean(),
        lcm_l1=tout["lcm_weight"].mean(),
        flow_l1=tout["flow"].abs().mean(),
        flow_tv=(tout["flow"][:, :, :, 1:] - tout["flow"][:, :, :, :-1]).abs().mean()
        + (tout["flow"][:, :, 1:] - tout["flow"][:, :, :-1]).abs().mean(),
        fake=fake)


#: Gradient routing (TGAN.lua): which loss terms reach which parameters.
#: ``lcm_l1``, ``flow_l1`` and ``flow_tv`` are the seed's optional penalties on the LCM weight
#: (L1) and the flow (L1 and total variation, px), 0 by default there; ``rec_l1`` (beyond the
#: seed) the mean absolute change of the image; they reach T only.
ROUTES = {"T": ("g", "a_fake", "lcm_l1", "flow_l1", "flow_tv", "rec_l1", "hint_l1"),
          "C": ("d", "a_real")}


def routed_grads(net: SmileGAN, terms: dict, gan_weight: float = 1.0, attr_weight: float = 1.0,
                 only: Optional[Tuple[str, ...]] = None, lcm_l1: float = 0.0,
                 flow_tv: float = 0.0, flow_l1: float = 0.0, rec_l1: float = 0.0,
                 hint_l1: float = 0.0) -> dict:
    """Gradients of the routed objectives: T gets ``lambda * g + attr * a_fake``, D/A heads and
    the encoder get ``lambda * d + attr * a_real`` (each objective is differentiated only with
    respect to its own parameter group, so the G loss never touches D and D's real/fake loss
    never touches T). ``only``: the loss terms to include (tests). Returns ``{param: grad}``."""
    w = dict(d=gan_weight, g=gan_weight, a_real=attr_weight, a_fake=attr_weight, lcm_l1=lcm_l1,
             flow_tv=flow_tv, flow_l1=flow_l1, rec_l1=rec_l1, hint_l1=hint_l1)
    out = {}
    groups = dict(T=[p for p in net.T.parameters() if p.requires_grad],
                  C=[p for p in net.C.parameters() if p.requires_grad])
    names = list(groups)
    for gi, g in enumerate(names):
        keys = [k for k in ROUTES[g] if (only is None or k in only) and w[k] != 0]
        if not keys:
            continue
        obj = sum(w[k] * terms[k] for k in keys)
        grads = torch.autograd.grad(obj, groups[g], retain_graph=gi < len(names) - 1,
                                    allow_unused=True)
        for p, gr in zip(groups[g], grads):
            out[p] = torch.zeros_like(p) if gr is None else gr
    return out


def train_step(net: SmileGAN, optimizer, x, src, anchors=None, gan_weight=1.0,
               attr_weight=1.0) -> dict:
    """One simultaneous update of all parameters (single Adam, no alternation). Returns the
    loss terms as floats."""
    terms = losses(net, x, src, anchors)
    grads = routed_grads(net, terms, gan_weight, attr_weight)
    optimizer.zero_grad(set_to_none=True)
    for p, g in grads.items():
        p.grad = g
    optimizer.step()
    return {k: float(terms[k].detach()) for k in LOSS_NAMES}


class SmileInference(nn.Module):
    """What is exported: ``(img (N, 3, 64, 64), delta (N, 1)[, anchors (N, K, 2)][, hint
    (N, 2, 64, 64)]) -> (flow (N, 2, 64, 64) crop px, lcm_weight (N, 1, 64, 64), palette
    (3,))``; the optional inputs in that order, each present when the config has it."""

    def __init__(self, t: Transformer):
        super().__init__()
        self.t = t

    def forward(self, img, delta, extra1=None, extra2=None):
        extra = [e for e in (extra1, extra2) if e is not None]
        anchors = extra.pop(0) if self.t.cfg.anchors else None
        hint = extra.pop(0) if self.t.cfg.hint else None
        return self.t.heads(img, delta, anchors, hint)


def apply_outputs(img, flow, lcm_weight, palette):
    """The edited crop from the exported outputs."""
    return (1 - lcm_weight) * warp(img, flow) + lcm_weight * palette.reshape(1, 3, 1, 1)
