"""Wall time of jitted computations, as every benchmark here measures it; the machine's speed."""
import time

import jax
import numpy as np


def run_times(fn, repeats: int, pause_s: float = 0.0, warmup: int = 0) -> list:
  """Seconds of each of `repeats` calls of fn() (outputs waited for with block_until_ready).

  `warmup`: calls before those, untimed (the first one compiles a jitted fn). `pause_s`: seconds
  to wait after each call, untimed.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
    time.sleep(pause_s)
  return times


def median_time(fn, repeats: int, pause_s: float = 0.0, warmup: int = 0) -> float:
  """Median of `run_times(fn, repeats, pause_s, warmup)`."""
  return float(np.median(run_times(fn, repeats, pause_s, warmup)))


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
  """This machine's float32 matmul speed now: GFLOP/s of one jitted [size, size] @ [size, size].

  With `stream_gbs`, the yardstick that makes times from different windows comparable: on a
  shared machine the same update's time drifts by a third or more between windows.
  """
  a = jax.numpy.ones((size, size), jax.numpy.float32)
  matmul = jax.jit(lambda x: x @ x)
  return 2 * size**3 / median_time(lambda: matmul(a), repeats, warmup=1) / 1e9


def stream_gbs(megabytes: int = 512, repeats: int = 5) -> float:
  """This machine's memory bandwidth now: GB/s read + written by one jitted a * c + 1 over a
  float32 array of `megabytes` (far beyond the caches)."""
  a = jax.numpy.ones((megabytes * 2**20 // 4,), jax.numpy.float32)
  scale = jax.jit(lambda x: x * 1.0001 + 1.0)
  return 2 * a.nbytes / median_time(lambda: scale(a), repeats, warmup=1) / 1e9


def cores_busy(fn, idle_s: float = 0.0) -> tuple:
  """(fn's result, CPU seconds of this process's threads per wall second while fn ran, not
  counting `idle_s` seconds it knowingly slept)."""
  cpu, wall = time.process_time(), time.perf_counter()
  result = fn()
  return result, (time.process_time() - cpu) / (time.perf_counter() - wall - idle_s)
