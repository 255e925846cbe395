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


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
  """This machine's float32 matmul speed now: GFLOP/s of one jitted [size, size] @ [size, size].

  The yardstick that makes times from different windows comparable: on a shared machine the same
  update's time drifts by a third or more between windows, and so does this figure.
  """
  a = jax.numpy.ones((size, size), jax.numpy.float32)
  matmul = jax.jit(lambda x: x @ x)
  jax.block_until_ready(matmul(a))
  return 2 * size**3 / median_time(lambda: matmul(a), repeats) / 1e9


def cores_busy(fn) -> tuple:
  """(fn's result, CPU seconds of this process's threads per wall second while fn ran)."""
  cpu, wall = time.process_time(), time.perf_counter()
  result = fn()
  return result, (time.process_time() - cpu) / (time.perf_counter() - wall)
