"""Glow expression transfer (seed 004): a multi-scale Glow on aligned faces
(:mod:`~warpcam.training.glow.model`), its training loop, export, latent-arithmetic transfer
and the seed's evaluation (README section "Glow expression transfer")."""
