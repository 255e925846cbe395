"""Shared test settings, for this process and every process a test starts (scripts, training
runs, the notebook's kernel), which inherit the environment:

- less XLA optimisation effort keeps compile times of tiny models low;
- the started processes share one persistent compilation cache for the whole test run (a fresh
  temporary directory, removed at the end), so that an executable compiled by one of them (the
  tiny config's update, collection, evaluation) is loaded by the next instead of compiled again.
  This process keeps jax's defaults (no persistent cache): its many small compiles would only
  be written, never read.
"""
import atexit
import os
import shutil
import tempfile

os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"

import jax  # noqa: E402  (reads the variable above when it is first imported)

jax.config.update("jax_disable_most_optimizations", True)

# Set after jax's import, so that only the processes the tests start read them. The first process
# of a run (pytest itself, before it starts any xdist worker) makes the directory; the workers
# inherit its name.
_CACHE_OWNER = "VONET_TEST_COMPILATION_CACHE"
if _CACHE_OWNER not in os.environ:
  os.environ[_CACHE_OWNER] = tempfile.mkdtemp(prefix="vonet_jax_test_cache_")
  atexit.register(shutil.rmtree, os.environ[_CACHE_OWNER], ignore_errors=True)
os.environ.update(JAX_COMPILATION_CACHE_DIR=os.environ[_CACHE_OWNER],
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
