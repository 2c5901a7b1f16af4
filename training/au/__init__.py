"""Fine-grained AU editing (seed 002, ``reference/seed-recipes.md`` Sec. 3, with GANimation's
attention): U-Net generator with multi-scale fusion units conditioned on relative AUs, a WGAN-GP
critic with an AU-regression head, trained on aligned faces labelled by the AU estimator."""
