"""Runs by turns in one process: the timing loop of the comparison scripts
(`compare_xla_options`, `compare_revisions`), and their --rounds flag."""
import time
from typing import Any, Callable

import jax
from absl import flags

from experiments.benchmark_train import SETTLE_S, peak_resident_gb

flags.DEFINE_integer("rounds", 8, "Timed rounds (each runs every variant once).")


def run_by_turns(steps: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list]:
  """Runs every step once per round, each round in the reverse order of the one before.

  Round 0 warms every step up and is not timed; each run is awaited (`block_until_ready` of
  what the step returns) and followed by a `benchmark_train.SETTLE_S` pause, as in
  benchmark_train. Prints each run with the process's peak resident memory so far (MOVi-A B=4: it
  grows by about 0.1 GB per run, 6.8 -> 8.3 GB over 12 rounds of two executables, as jemalloc
  keeps what their buffers fragment; one comparison of the eighteenth session reached 24 GB
  and the OOM killer). Returns name -> the seconds of its `rounds` timed runs.
  """
  times = {name: [] for name in steps}
  for round_ in range(rounds + 1):
    for name in list(steps) if round_ % 2 == 0 else list(steps)[::-1]:
      start = time.perf_counter()
      jax.block_until_ready(steps[name]())
      seconds = time.perf_counter() - start
      time.sleep(SETTLE_S)
      if round_:
        times[name].append(seconds)
      print(f"round {round_} {name}: {seconds:.3f} s (peak resident {peak_resident_gb():.1f} GB)",
            flush=True)
  return times
