"""VONet (ICLR 2024) in JAX/Flax: unsupervised video object learning."""
