"""KeepSmiling (seed 003): SimpleGAN, ComplexGAN and SplitGAN on 64 x 64 mouth crops, and the
SplitGAN's latent translation (``docs`` in the README section "KeepSmiling")."""
