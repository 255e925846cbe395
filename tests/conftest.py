"""Shared test settings: less XLA optimisation effort keeps compile times of tiny models low."""
import jax

jax.config.update("jax_disable_most_optimizations", True)
