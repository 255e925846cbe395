"""Shared test settings: less XLA optimisation effort keeps compile times of tiny models low, in
this process and in every process a test starts (scripts, training runs, the notebook's kernel),
which inherit the environment variable."""
import os

os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"

import jax  # noqa: E402  (reads the variable above when it is first imported)

jax.config.update("jax_disable_most_optimizations", True)
