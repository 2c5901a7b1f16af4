"""The three KeepSmiling set-ups (seed 003, emanuelmaus/KeepSmiling ``model.py``;
``../shared/reference/seed-recipes.md`` section 4) and their losses.

Convention block:

- Images are ``(N, 3, 64, 64)`` float32 RGB in ``[-1, 1]`` (the seed's normalisation) inside
  every network here; :func:`to_net` / :func:`from_net` convert from and to ``[0, 1]``.
- Labels: ``1.0`` = smiling, ``0.0`` = not. (The seed stores MTFL's ``smile - 1``, so 0 is
  smiling there; the flip is made once, in the loaders.)
- Networks return **logits**; every probability loss is ``binary_cross_entropy_with_logits``.
- Widths scale with one multiplier each (``g_mult``, ``d_mult``; 1.0 = the recipe's widths).

Networks (recipe widths at multiplier 1):

- :class:`Encoder` (SplitGAN, and the front of ComplexGAN's G): conv 7x7 **stride 3** pad 3
  -> 32 @ 22; conv 4 s2 -> 64 @ 11 -> 128 @ 5 (InstanceNorm affine + ReLU); two residual blocks
  (conv3, IN, ReLU, conv3, IN). Latent ``128 x 5 x 5 = 3200``.
- :class:`Decoder`: ConvT 4 s1 p0 -> 512 @ 8 -> 256 @ 16 -> 128 @ 32 (BN + ReLU) -> 3 @ 64, tanh.
- :class:`DCGenerator` (SimpleGAN, DCGAN, Radford et al. ICLR 2016): ``nz = 100`` -> ConvT 4 s1
  p0 512 @ 4 -> 256 -> 128 -> 64 -> 3 @ 64 (BN + ReLU), tanh.
- :class:`Critic`: DCGAN trunk conv 4 s2 64 (LReLU 0.2) -> 128 -> 256 -> 512 @ 4, a source head
  (conv 4 -> 1) and, for ComplexGAN, a class head (conv 4 -> 1). BatchNorm in the SimpleGAN's D
  (the DCGAN recipe); no normalisation where a gradient penalty is taken (a per-sample gradient
  norm is meaningless through batch statistics; WGAN-GP, Gulrajani et al. NeurIPS 2017, sec. 4).

Losses (``*_losses``; each returns named scalar terms, see the functions).

Seed bugs fixed here (recipe section 4):

1. ``filter_data`` never applied the smile filter, so the "smiling-only" SimpleGAN saw every
   frontal face: :class:`~warpcam.training.keepsmiling.data.MouthCrops` filters by label.
2. ComplexGAN applied a logits-based BCE to sigmoid outputs (squashing twice): heads return
   logits and are used with ``*_with_logits`` only; the WGAN source head has no sigmoid.
3. ``model.py`` lacked ``import torch``; ``encoder_splitGAN`` called ``Encoder(ngpu)`` without
   ``nc``: one module, every constructor takes its arguments by name.
4. Translation: ``get_mean`` divided both sums by the number of smiling latents; and the nets
   stayed in train mode (BatchNorm on a batch of 1): see
   :mod:`warpcam.training.keepsmiling.translate` (each mean over its own count, eval mode).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZE = 64
NZ = 100


def to_net(x01: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` -> ``[-1, 1]``."""
    return x01 * 2.0 - 1.0


def from_net(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> ``[0, 1]`` (clamped)."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def _w(c: int, mult: float) -> int:
    return max(4, int(round(c * mult)))


def init_weights(m: nn.Module) -> None:
    """The DCGAN init of the seed: conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@dataclass
class KSConfig:
    """Widths and set-up of a KeepSmiling model (stored in checkpoints and artifacts)."""
    setup: str = "split"            # "simple", "complex" or "split"
    g_mult: float = 1.0             # generator / encoder / decoder width multiplier
    d_mult: float = 1.0             # critic width multiplier
    nz: int = NZ                    # SimpleGAN noise size
    latent: int = 128               # encoder output channels (the recipe's 128 x 5 x 5)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KSConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.InstanceNorm2d(c, affine=True), nn.ReLU(True),
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.body(x)


def _down(cin, cout, k=4, s=2, p=1):
    return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.InstanceNorm2d(cout, affine=True),
            nn.ReLU(True)]


class Encoder(nn.Module):
    """``(N, nc, 64, 64)`` -> latent ``(N, latent, 5, 5)`` (the recipe's 128 x 5 x 5 = 3200 by
    default; the two stem widths are ``32 mult`` and ``64 mult``).

    InstanceNorm without running statistics: the seed's ``track_running_stats=True`` makes eval
    mode a different network from the one trained (the seed hid it by never leaving train mode).
    """

    def __init__(self, nc: int = 3, mult: float = 1.0, latent: int = 128):
        super().__init__()
        c1, c2, c3 = _w(32, mult), _w(64, mult), int(latent)
        self.channels = c3
        self.net = nn.Sequential(*_down(nc, c1, 7, 3, 3), *_down(c1, c2), *_down(c2, c3),
                                 _Res(c3), _Res(c3))

    def forward(self, x):
        return self.net(x)


def _up(cin, cout, k=4, s=2, p=1):
    return [nn.ConvTranspose2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class Decoder(nn.Module):
    """Latent ``(N, c, 5, 5)`` -> image ``(N, 3, 64, 64)`` in [-1, 1]."""

    def __init__(self, latent: int, mult: float = 1.0, nc: int = 3):
        super().__init__()
        c8, c16, c32 = _w(512, mult), _w(256, mult), _w(128, mult)
        self.net = nn.Sequential(*_up(latent, c8, 4, 1, 0), *_up(c8, c16), *_up(c16, c32),
                                 nn.ConvTranspose2d(c32, nc, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.net(z)


class DCGenerator(nn.Module):
    """SimpleGAN's G: noise ``(N, nz, 1, 1)`` -> ``(N, 3, 64, 64)`` in [-1, 1]."""

    def __init__(self, nz: int = NZ, mult: float = 1.0, nc: int = 3):
        super().__init__()
        c = [_w(v, mult) for v in (512, 256, 128, 64)]
        self.net = nn.Sequential(*_up(nz, c[0], 4, 1, 0), *_up(c[0], c[1]), *_up(c[1], c[2]),
                                 *_up(c[2], c[3]), nn.ConvTranspose2d(c[3], nc, 4, 2, 1),
                                 nn.Tanh())

    def forward(self, z):
        return self.net(z)


class Critic(nn.Module):
    """DCGAN trunk with a source head and optionally a class head; ``forward(x) -> (src, cls)``
    logits ``(N,)`` each (``cls`` is None without the class head)."""

    def __init__(self, nc: int = 3, mult: float = 1.0, batch_norm: bool = False,
                 cls_head: bool = False):
        super().__init__()
        c = [_w(v, mult) for v in (64, 128, 256, 512)]
        layers = [nn.Conv2d(nc, c[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for a, b in zip(c[:-1], c[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=not batch_norm)]
            if batch_norm:
                layers += [nn.BatchNorm2d(b)]
            layers += [nn.LeakyReLU(0.2, True)]
        self.trunk = nn.Sequential(*layers)
        self.src = nn.Conv2d(c[-1], 1, 4, 1, 0)
        self.cls = nn.Conv2d(c[-1], 1, 4, 1, 0) if cls_head else None

    def forward(self, x):
        h = self.trunk(x)
        return self.src(h).flatten(), (self.cls(h).flatten() if self.cls is not None else None)


class LabelGenerator(nn.Module):
    """ComplexGAN's G: ``[x, label map]`` (4 channels) -> Encoder -> Decoder."""

    def __init__(self, mult: float = 1.0, latent: int = 128):
        super().__init__()
        self.enc = Encoder(4, mult, latent)
        self.dec = Decoder(self.enc.channels, mult)

    def forward(self, x, label):
        m = label.view(-1, 1, 1, 1).to(x.dtype).expand(-1, 1, x.shape[2], x.shape[3])
        return self.dec(self.enc(torch.cat([x, m], 1)))


class KeepSmiling(nn.Module):
    """One set-up's networks: ``G`` (SimpleGAN: :class:`DCGenerator`; ComplexGAN:
    :class:`LabelGenerator`), ``E`` + ``De`` (SplitGAN), and ``D`` (:class:`Critic`)."""

    def __init__(self, cfg: KSConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.setup == "simple":
            self.G = DCGenerator(cfg.nz, cfg.g_mult)
            self.D = Critic(3, cfg.d_mult, batch_norm=True)
        elif cfg.setup == "complex":
            self.G = LabelGenerator(cfg.g_mult, cfg.latent)
            self.D = Critic(3, cfg.d_mult, cls_head=True)
        elif cfg.setup == "split":
            self.E = Encoder(3, cfg.g_mult, cfg.latent)
            self.De = Decoder(self.E.channels, cfg.g_mult)
            self.D = Critic(3, cfg.d_mult)
        else:
            raise ValueError(f"unknown KeepSmiling set-up {cfg.setup!r} (simple, complex, split)")
        self.apply(init_weights)

    def g_parameters(self):
        if self.cfg.setup == "split":
            return list(self.E.parameters()) + list(self.De.parameters())
        return list(self.G.parameters())

    def reconstruct(self, x):
        """SplitGAN: ``De(E(x))``."""
        return self.De(self.E(x))


def gradient_penalty(D: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: ``mean((|grad_xhat D_src(xhat)|_2 - 1)^2)`` on random interpolates."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    xh = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    src, _ = D(xh)
    g, = torch.autograd.grad(src.sum(), xh, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def _bce(logits, target: float):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# ---------------------------------------------------------------- SimpleGAN (DCGAN)

def simple_d_loss(net: KeepSmiling, real: torch.Tensor) -> dict:
    """D: ``BCE(D(x), 1) + BCE(D(G(z)), 0)`` on smiling mouths ``real`` ([-1, 1])."""
    z = torch.randn(real.shape[0], net.cfg.nz, 1, 1, device=real.device)
    with torch.no_grad():
        fake = net.G(z)
    sr, _ = net.D(real)
    sf, _ = net.D(fake)
    d = _bce(sr, 1.0) + _bce(sf, 0.0)
    return dict(d=d, d_real=torch.sigmoid(sr).mean().detach(),
                d_fake=torch.sigmoid(sf).mean().detach())


def simple_g_loss(net: KeepSmiling, n: int, device) -> dict:
    """G: non-saturating ``BCE(D(G(z)), 1)``."""
    z = torch.randn(n, net.cfg.nz, 1, 1, device=device)
    sf, _ = net.D(net.G(z))
    return dict(g=_bce(sf, 1.0))


# ---------------------------------------------------------------- ComplexGAN (StarGAN-like)

def complex_d_loss(net: KeepSmiling, x, c, target, lambda_cls=1.0, lambda_gp=10.0) -> dict:
    """Critic: ``-mean src(x) + mean src(G(x, t)) + lambda_cls BCE(cls(x), c) + lambda_gp GP``."""
    with torch.no_grad():
        fake = net.G(x, target)
    sr, cr = net.D(x)
    sf, _ = net.D(fake)
    cls = F.binary_cross_entropy_with_logits(cr, c)
    gp = gradient_penalty(net.D, x, fake)
    w = sr.mean() - sf.mean()
    return dict(d=-w + lambda_cls * cls + lambda_gp * gp, wdist=w.detach(), d_cls=cls.detach(),
                gp=gp.detach())


def complex_g_loss(net: KeepSmiling, x, c, target, lambda_cls=1.0, lambda_rec=10.0) -> dict:
    """G: ``-mean src(G(x, t)) + lambda_cls BCE(cls(G(x, t)), t) + lambda_rec L1(G(G(x, t), c), x)``
    (the cycle)."""
    fake = net.G(x, target)
    sf, cf = net.D(fake)
    cls = F.binary_cross_entropy_with_logits(cf, target)
    rec = (net.G(fake, c) - x).abs().mean()
    return dict(g=-sf.mean() + lambda_cls * cls + lambda_rec * rec, g_cls=cls.detach(),
                cycle=rec.detach())


# ---------------------------------------------------------------- SplitGAN

def split_d_loss(net: KeepSmiling, x, lambda_gp=3.0) -> dict:
    """D: ``BCE(D(x), 1) + BCE(D(De(E(x))), 0) + lambda_gp GP``."""
    with torch.no_grad():
        fake = net.reconstruct(x)
    sr, _ = net.D(x)
    sf, _ = net.D(fake)
    gp = gradient_penalty(net.D, x, fake)
    bce = _bce(sr, 1.0) + _bce(sf, 0.0)
    return dict(d=bce + lambda_gp * gp, d_bce=bce.detach(), gp=gp.detach())


def split_g_loss(net: KeepSmiling, x, lambda_l1=9.0, lambda_l1_single=0.0) -> dict:
    """E + De: ``BCE(D(De(E(x))), 1) + lambda_l1 L1(x, De(E(De(E(x)))))`` (the L1 on the
    *double* pass, as the seed); ``lambda_l1_single`` adds ``L1(x, De(E(x)))`` (not in the
    seed; 0 there)."""
    rec = net.reconstruct(x)
    sf, _ = net.D(rec)
    rec2 = net.reconstruct(rec)
    l1d = (rec2 - x).abs().mean()
    l1s = (rec - x).abs().mean()
    adv = _bce(sf, 1.0)
    return dict(g=adv + lambda_l1 * l1d + lambda_l1_single * l1s, g_adv=adv.detach(),
                l1_double=l1d.detach(), l1_single=l1s.detach())


class SplitInference(nn.Module):
    """The exported SplitGAN: ``(x (N, 3, 64, 64) RGB [0, 1], strength (N, 1)) ->
    (edit, recon)``, both ``(N, 3, 64, 64)`` RGB [0, 1]: ``recon = De(E(x))``,
    ``edit = De(E(x) + strength * t)`` with the translation ``t`` (latent shape) inside.
    At strength 0 ``edit == recon`` exactly (the same graph on the same latent)."""

    def __init__(self, E: Encoder, De: Decoder, t: torch.Tensor):
        super().__init__()
        self.E, self.De = E, De
        self.register_buffer("t", t.detach().clone().reshape(1, *t.shape[-3:]))

    def forward(self, x, strength):
        z = self.E(to_net(x))
        zz = torch.cat([z, z + strength.view(-1, 1, 1, 1) * self.t], 0)
        out = from_net(self.De(zz))
        n = x.shape[0]
        return out[n:], out[:n]
