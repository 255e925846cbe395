"""Times the built-in MOVi-style dataset: simulating videos, and building the TFDS dataset.

Prints videos per second for
  * simulate: `simulate.simulate_video` alone (sample + physics + TinyRenderer + shadows);
  * build: `synthetic.ensure_dataset` into a fresh temporary data_dir (simulation, PNG encoding,
    TFRecord writing, dataset statistics), after a warm-up build so TensorFlow start-up is not
    counted.
With --workers=1 (default) the process is pinned to one CPU core (Linux), so the figures are
per core even where other processes compete for the machine; CPU seconds are printed too.

Usage: python -m experiments.benchmark_synthetic [--resolution 128] [--videos 40] [--workers 1]
"""
import argparse
import os
import shutil
import tempfile
import time

from vonet_jax.data import simulate
from vonet_jax.data import synthetic


def timed(function):
  """(result, wall seconds, CPU seconds of this process)."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = function()
  return result, time.perf_counter() - wall, time.process_time() - cpu


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolution", type=int, default=128, choices=synthetic.RESOLUTIONS)
  parser.add_argument("--videos", type=int, default=40)
  parser.add_argument("--workers", type=int, default=1)
  parser.add_argument("--min_objects", type=int, default=3)
  parser.add_argument("--max_objects", type=int, default=10)
  args = parser.parse_args()
  if args.workers == 1 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
  r = args.resolution

  simulate.simulate_video((0, 0, 10**6), r, args.min_objects, args.max_objects)  # warm-up
  _, wall, cpu = timed(lambda: [
      simulate.simulate_video((0, 0, i), r, args.min_objects, args.max_objects)
      for i in range(args.videos)])
  print(f"simulate {r}x{r}: {args.videos / wall:.2f} videos/s "
        f"({args.videos / cpu:.2f} per CPU second), {args.videos} videos")

  params = synthetic.GenerationParams(num_train_videos=args.videos, num_validation_videos=1,
                                      min_objects=args.min_objects,
                                      max_objects=args.max_objects)
  root = tempfile.mkdtemp(prefix="benchmark_synthetic_")
  try:
    warm = synthetic.GenerationParams(num_train_videos=1, num_validation_videos=1)
    synthetic.ensure_dataset(os.path.join(root, "warm"), r, warm)
    _, wall, cpu = timed(lambda: synthetic.ensure_dataset(
        os.path.join(root, "timed"), r, params, num_workers=args.workers))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  total = args.videos + 1
  print(f"build {r}x{r} with {args.workers} worker(s): {total / wall:.2f} videos/s "
        f"({total / cpu:.2f} per CPU second of the main process), {total} videos")


if __name__ == "__main__":
  main()
