"""DeepWarp smile editor (seed 000, ``reference/seed-recipes.md`` Sec. 1): transformer T,
discriminator D and attribute branch A, trained on aligned 64 x 64 faces."""
