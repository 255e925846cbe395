"""Times FG-ARI + mIoU on a MOVi validation split's worth of ids (250 videos x 24 x 128 x 128).

Ground truth: random ids 0..10 (background + ~10 objects) on 8x8 pixel blocks; prediction: random
ids 0..K with K = 11 (null + 11 slots), half the pixels copied from the ground truth so the scores
are not trivial. Ids are uint8, as MOVi stores them. Prints the seconds of `fg_ari_and_miou` and of
`fg_ari` + `miou` called separately (two passes over the pixels).

Usage: python -m experiments.benchmark_metrics [--videos 250]
"""
import argparse
import time

import numpy as np

from vonet_jax import metrics


def make_ids(rng, videos, frames, size, num_slots):
  """Synthetic (true, pred) uint8 ids [videos, frames, size, size]."""
  coarse = rng.integers(0, 11, (videos, frames, size // 8, size // 8), dtype=np.uint8)
  true = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
  pred = rng.integers(0, num_slots + 1, true.shape, dtype=np.uint8)
  copy = rng.random(true.shape, dtype=np.float32) < 0.5
  np.copyto(pred, true, where=copy)
  return true, pred


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--videos", type=int, default=250)
  parser.add_argument("--slots", type=int, default=11)
  args = parser.parse_args()
  true, pred = make_ids(np.random.default_rng(0), args.videos, 24, 128, args.slots)

  start = time.perf_counter()
  ari, iou = metrics.fg_ari_and_miou(true, pred, max_pred_id=args.slots)
  both = time.perf_counter() - start

  start = time.perf_counter()
  metrics.fg_ari(true, pred, max_pred_id=args.slots)
  metrics.miou(true, pred, max_pred_id=args.slots)
  separate = time.perf_counter() - start

  print(f"{args.videos} videos x 24 x 128 x 128, K={args.slots}: "
        f"fg_ari_and_miou {both:.2f} s, fg_ari + miou {separate:.2f} s "
        f"(mean FG-ARI {metrics.summarize(ari)['mean']:.3f}, "
        f"mean mIoU {metrics.summarize(iou)['mean']:.3f})")


if __name__ == "__main__":
  main()
