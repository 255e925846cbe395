"""Wall time of jitted computations, as every benchmark here measures it."""
import time

import jax
import numpy as np


def median_time(fn, repeats: int, pause_s: float = 0.0) -> float:
  """Median seconds of `repeats` calls of fn() (outputs waited for with block_until_ready).

  Warm up (compile) before calling it: every call is timed. `pause_s`: seconds to wait after
  each call, untimed.
  """
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
    time.sleep(pause_s)
  return float(np.median(times))
