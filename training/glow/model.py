"""Multi-scale Glow (Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1
Convolutions", NeurIPS 2018; the layout of openai/glow ``model.py``) with an exact
log-likelihood in bits per dimension, and ``encode`` / ``decode`` that invert each other.

Convention block:

- Images are ``(N, 3, S, S)`` float32 RGB in ``[0, 1]`` at the model's edge; inside the flow
  ``x = image - 0.5`` in ``[-0.5, 0.5]`` (openai/glow's ``preprocess``). ``S`` must be divisible
  by ``2 ** levels``.
- **Likelihood** (paper sec. 3 and openai/glow ``preprocess``): the 8-bit image is reduced to
  ``n_bits`` (``x_q = floor(x_255 / 2 ** (8 - n_bits))``), scaled to ``x_q / n_bins - 0.5`` and
  dequantised with uniform noise ``U(0, 1 / n_bins)`` per value (``n_bins = 2 ** n_bits``), so
  ``-log p(x_discrete) <= -log p(x) + D log(n_bins)``; bits per dimension
  ``bpd = (-log p_Z(z) - log|det dz/dx| + D log(n_bins)) / (D log 2)``, ``D = 3 S S``. Without the
  noise (evaluation) the bin centre ``+ 0.5 / n_bins`` is used.
- **Levels** (paper fig. 2b): ``levels`` times [squeeze (space-to-depth 2x2: ``(C, H, W) ->
  (4C, H/2, W/2)``), ``K`` flow steps, split (all but the last level)]. A **flow step** is
  actnorm -> invertible 1x1 convolution -> affine coupling (paper table 1).
- **ActNorm** (sec. 3.1): ``y = (x + b) * exp(logs)`` per channel, initialised from the first
  batch it sees in training mode (data-dependent init: zero mean, unit variance per channel).
  The buffer ``initialized`` records that it happened, so a resumed or exported model never
  initialises again.
- **Invertible 1x1 convolution** (sec. 3.2), **LU-decomposed**: ``W = P L (U + diag(sign *
  exp(log_s)))`` with ``P`` fixed (from the QR of a random rotation), ``L`` unit lower and ``U``
  strictly upper triangular; ``log|det| = H W sum(log_s)``.
- **Affine coupling** (sec. 3.3, openai/glow ``f`` and ``revnet2d_step``): ``x_a, x_b`` = first
  and second channel halves; ``h = NN(x_a)`` (conv 3x3 -> actnorm -> ReLU -> conv 1x1 -> actnorm
  -> ReLU -> zero-initialised conv 3x3), ``shift = h[:, 0::2]``, ``scale = sigmoid(h[:, 1::2] +
  2)``, ``y_b = (x_b + shift) * scale``.
- **Split with a learned conditional prior** (openai/glow ``split2d``): ``z_b`` is drawn from
  ``N(mean(z_a), exp(logs(z_a)))`` given by a zero-initialised conv 3x3 on ``z_a``; the top
  latent has a learned ``mean, logs`` per position (``learntop``).
- **Latents** are the standardised ``eps = (z - mean) * exp(-logs)`` of every level (what
  openai/glow's ``encoder`` returns and what seed 004 does arithmetic on), listed from the first
  split (largest) to the top, or flattened in that order (``D`` values, NCHW order per level).
  ``decode(encode(x)) == x`` up to float rounding.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOG2PI = math.log(2 * math.pi)


@dataclass
class GlowConfig:
    """Network size. ``size`` image side (px), ``levels`` (L), ``depth`` (K flow steps per
    level), ``hidden`` (coupling NN width), ``n_bits`` (colour depth of the likelihood)."""

    size: int = 64
    levels: int = 3
    depth: int = 8
    hidden: int = 64
    n_bits: int = 5
    channels: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GlowConfig":
        return cls(**{k: v for k, v in dict(d).items() if k in cls.__dataclass_fields__})

    @property
    def dims(self) -> int:
        return self.channels * self.size * self.size

    def latent_shapes(self) -> List[Tuple[int, int, int]]:
        """``(C, H, W)`` of each level's latent, first split to top."""
        c, s, out = self.channels, self.size, []
        for i in range(self.levels):
            c, s = c * 4, s // 2
            if i < self.levels - 1:
                out.append((c // 2, s, s))
                c //= 2
            else:
                out.append((c, s, s))
        return out


#: Named sizes: ``cpu`` trains on one thread of this machine in about an hour; ``gpu128`` and
#: ``gpu256`` are the paper's CelebA-HQ layouts (K = 32, hidden 512; L = 5 at 128, 6 at 256).
CONFIGS = {
    "tiny": GlowConfig(size=16, levels=2, depth=2, hidden=16),
    "cpu": GlowConfig(size=64, levels=3, depth=8, hidden=64, n_bits=5),
    "gpu64": GlowConfig(size=64, levels=4, depth=32, hidden=512, n_bits=5),
    "gpu128": GlowConfig(size=128, levels=5, depth=32, hidden=512, n_bits=5),
    "gpu256": GlowConfig(size=256, levels=6, depth=32, hidden=512, n_bits=5),
}


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)``, each 2x2 block into channels (openai order)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, h * 2, w * 2)


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + bias) * exp(logs)`` with data-dependent init (module
    docstring). ``forward(x) -> (y, logdet per sample)``, ``reverse(y) -> x``."""

    def __init__(self, channels: int, scale: float = 1.0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))
        self.scale = scale
        self._ready = False  # a python mirror of the buffer: no tensor branch in export

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.initialized.item())

    @torch.no_grad()
    def _init(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(self.scale / (var.sqrt() + 1e-6)))
        self.initialized.fill_(1)
        self._ready = True

    def forward(self, x: torch.Tensor):
        if self.training and not self._ready:
            self._init(x)
        y = (x + self.bias) * torch.exp(self.logs)
        return y, self.logs.sum() * (x.shape[2] * x.shape[3])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1LU(nn.Module):
    """Invertible 1x1 convolution, LU-decomposed (module docstring)."""

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower.float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: torch.Tensor):
        w = self.weight()
        y = F.conv2d(x, w[:, :, None, None])
        return y, self.log_s.sum() * (x.shape[2] * x.shape[3])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        # inverse in float64: the round trip stays within float32 rounding for any depth
        w_inv = torch.linalg.inv(self.weight().double()).float()
        return F.conv2d(y, w_inv[:, :, None, None])


class ZeroConv(nn.Module):
    """openai/glow ``conv2d_zeros``: a zero-initialised 3x3 conv whose output is scaled by
    ``exp(3 logs)`` (so the flow starts as the identity)."""

    def __init__(self, cin: int, cout: int, logscale_factor: float = 3.0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, cout, 1, 1))
        self.factor = logscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.logs * self.factor)


class _NormConv(nn.Module):
    """conv (no bias) -> actnorm -> ReLU (openai/glow ``conv2d`` with ``do_actnorm``)."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        nn.init.normal_(self.conv.weight, std=0.05)
        self.norm = ActNorm(cout)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x))[0])


class AffineCoupling(nn.Module):
    """Affine coupling with ``scale = sigmoid(h + 2)`` (module docstring)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        half = channels // 2
        self.nn = nn.Sequential(_NormConv(half, hidden, 3), _NormConv(hidden, hidden, 1),
                                ZeroConv(hidden, 2 * (channels - half)))
        self.half = half

    def _st(self, xa):
        h = self.nn(xa)
        return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0)

    def forward(self, x: torch.Tensor):
        xa, xb = x[:, :self.half], x[:, self.half:]
        shift, scale = self._st(xa)
        yb = (xb + shift) * scale
        return torch.cat([xa, yb], 1), torch.log(scale).flatten(1).sum(1)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y[:, :self.half], y[:, self.half:]
        shift, scale = self._st(ya)
        return torch.cat([ya, yb / scale - shift], 1)


class FlowStep(nn.Module):
    """actnorm -> invertible 1x1 conv -> affine coupling (paper table 1)."""

    def __init__(self, channels: int, hidden: int, seed: int):
        super().__init__()
        self.norm = ActNorm(channels)
        self.conv = InvConv1x1LU(channels, seed)
        self.coupling = AffineCoupling(channels, hidden)

    def forward(self, x):
        x, a = self.norm(x)
        x, b = self.conv(x)
        x, c = self.coupling(x)
        return x, a + b + c

    def reverse(self, y):
        return self.norm.reverse(self.conv.reverse(self.coupling.reverse(y)))


def _gauss_logp(z, mean, logs) -> torch.Tensor:
    """Sum over all but the batch dim of ``log N(z; mean, exp(logs)^2)``."""
    lp = -0.5 * (LOG2PI + 2.0 * logs + (z - mean) ** 2 * torch.exp(-2.0 * logs))
    return lp.flatten(1).sum(1)


class Glow(nn.Module):
    """Multi-scale Glow (module docstring).

    Methods (images ``(N, 3, S, S)`` in ``[0, 1]``):

    - ``nll_bpd(x01, noise=True) -> (N,)`` bits per dimension (dequantised likelihood).
    - ``encode(x01) -> list of eps`` (``latent_shapes``), ``decode(eps list) -> images``
      (not clamped: exactly the inverse); ``encode_flat`` / ``decode_flat`` on ``(N, D)``.
    - ``flow(x) -> (z list, logdet)`` on ``x`` in ``[-0.5, 0.5]``: the raw (not standardised)
      latents and ``log|det dz/dx|`` per sample (``z`` is ``x``'s bijective image).
    """

    def __init__(self, cfg: GlowConfig):
        super().__init__()
        if cfg.size % (2 ** cfg.levels):
            raise ValueError(f"image size {cfg.size} is not divisible by 2**levels "
                             f"({2 ** cfg.levels})")
        self.cfg = cfg
        self.levels = nn.ModuleList()
        self.priors = nn.ModuleList()
        c = cfg.channels
        for i in range(cfg.levels):
            c *= 4
            self.levels.append(nn.ModuleList(
                FlowStep(c, cfg.hidden, seed=1000 * i + k) for k in range(cfg.depth)))
            if i < cfg.levels - 1:
                self.priors.append(ZeroConv(c // 2, c))
                c //= 2
        top = cfg.latent_shapes()[-1]
        self.top_mean = nn.Parameter(torch.zeros(1, *top))
        self.top_logs = nn.Parameter(torch.zeros(1, *top))
        self.shapes = cfg.latent_shapes()
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    # -- the bijection x <-> z ------------------------------------------------------------
    def flow(self, x: torch.Tensor):
        _, zs, _, logdet, _ = self._forward_all(x)
        return zs, logdet

    def _prior(self, i: int, h: torch.Tensor):
        """``(mean, logs)`` of level ``i``'s latent given the kept half ``h`` (top: learned)."""
        if i < len(self.priors):
            p = self.priors[i](h)
            return p[:, 0::2], p[:, 1::2]
        n = h.shape[0]
        return self.top_mean.expand(n, -1, -1, -1), self.top_logs.expand(n, -1, -1, -1)

    def _forward_all(self, x: torch.Tensor):
        """``(eps list, z list, log p_Z(z), logdet, sum of prior logs)`` of ``x``."""
        eps, zs, logp = [], [], torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        logdet = torch.zeros_like(logp)
        prior_logs = torch.zeros_like(logp)
        h = x
        for i, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if i < len(self.levels) - 1:
                c = h.shape[1] // 2
                z, h = h[:, c:], h[:, :c]
                mean, logs = self._prior(i, h)
            else:
                z = h
                mean, logs = self._prior(i, h)
            zs.append(z)
            logp = logp + _gauss_logp(z, mean, logs)
            prior_logs = prior_logs + logs.flatten(1).sum(1)
            eps.append((z - mean) * torch.exp(-logs))
        return eps, zs, logp, logdet, prior_logs

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """``(N,)`` dequantised bits per dimension (:meth:`nll_bpd`; the training loss)."""
        return self.nll_bpd(x01, noise=True)

    # -- likelihood -----------------------------------------------------------------------
    def preprocess(self, x01: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """``[0, 1]`` image -> dequantised ``x`` in ``[-0.5, 0.5]`` (module docstring)."""
        n_bins = 2 ** self.cfg.n_bits
        x = torch.floor(torch.round(x01 * 255.0) / 2 ** (8 - self.cfg.n_bits))
        x = x / n_bins - 0.5
        if noise:
            return x + torch.rand_like(x) / n_bins
        return x + 0.5 / n_bins

    def nll_bpd(self, x01: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """``(N,)`` bits per dimension of the ``n_bits`` image ``x01`` (module docstring)."""
        x = self.preprocess(x01, noise)
        _, _, logp, logdet, _ = self._forward_all(x)
        d = self.cfg.dims
        return (-(logp + logdet) + d * math.log(2 ** self.cfg.n_bits)) / (d * math.log(2.0))

    # -- encode / decode ------------------------------------------------------------------
    def encode(self, x01: torch.Tensor) -> List[torch.Tensor]:
        """Standardised latents of continuous images ``x01`` in ``[0, 1]`` (no quantisation)."""
        return self._forward_all(x01 - 0.5)[0]

    def decode(self, eps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Images (``[0, 1]`` where the latents are a face's; not clamped) from latents."""
        h = None
        for i in range(len(self.levels) - 1, -1, -1):
            if i == len(self.levels) - 1:
                mean, logs = self._prior(i, eps[i])  # learned top prior (batch size only)
                h = mean + torch.exp(logs) * eps[i]
            else:
                mean, logs = self._prior(i, h)
                h = torch.cat([h, mean + torch.exp(logs) * eps[i]], 1)
            for step in reversed(self.levels[i]):
                h = step.reverse(h)
            h = unsqueeze(h)
        return h + 0.5

    def flatten(self, eps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Latent list -> ``(N, D)``."""
        return torch.cat([e.flatten(1) for e in eps], 1)

    def unflatten(self, flat: torch.Tensor) -> List[torch.Tensor]:
        """``(N, D)`` -> latent list (``latent_shapes``)."""
        out, o = [], 0
        for s, k in zip(self.shapes, self.sizes):
            out.append(flat[:, o:o + k].reshape(flat.shape[0], *s))
            o += k
        return out

    def encode_flat(self, x01: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.encode(x01))

    def decode_flat(self, flat: torch.Tensor) -> torch.Tensor:
        return self.decode(self.unflatten(flat))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.7, generator=None) -> torch.Tensor:
        """``n`` images drawn at ``temperature`` (paper sec. 5.3), clamped to ``[0, 1]``."""
        dev = self.top_mean.device
        eps = [torch.randn(n, *s, generator=generator).to(dev) * temperature for s in self.shapes]
        return self.decode(eps).clamp(0, 1)


class GlowCodec(nn.Module):
    """The exported program: ``(x (N, 3, S, S) in [0, 1], z (N, D)) -> (encode(x) (N, D),
    decode(z) clamped to [0, 1] (N, 3, S, S), bpd(x) (N,))``; one module so one ``.pt2``
    holds both directions (pass a zero ``z`` or a grey ``x`` for the half you do not need)."""

    def __init__(self, glow: Glow):
        super().__init__()
        self.glow = glow

    def forward(self, x: torch.Tensor, z: torch.Tensor):
        g = self.glow
        eps, _, logp, logdet, _ = g._forward_all(x - 0.5)
        d = g.cfg.dims
        # continuous 8-bit input: bpd of the 256-level image (density of x - 0.5 plus D log 256)
        bpd = (-(logp + logdet) + d * math.log(256.0)) / (d * math.log(2.0))
        return g.flatten(eps), g.decode_flat(z).clamp(0.0, 1.0), bpd
