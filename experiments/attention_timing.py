"""The paper's Figure 5: time to produce the attention masks of one 128x128 frame against K.

    python -m experiments.attention_timing --out_dir=experiments/results/attention_timing

VONet's parallel attention (one U-Net call on K maps plus the mask transformer) against MONet's
recurrent attention (K - 1 U-Net calls in a lax.scan) over the same U-Net, MOVi-A sizes, for
K = 1, 2, 4, 8, 11, 16, 24, 32. Each is jitted; compilation is excluded; the figure is the
median of --repeats runs with block_until_ready. Writes timing.csv and timing.png. The feature
map [1, 64, 64, 128] is the input (the backbone is the same for both and not timed); `--config`
takes another config's model and frame size (the tests use configs/tiny.py).
Expected wall time on a 2-core CPU: about 10 minutes (mostly compilation); runs unchanged on GPU.
"""
import csv
import os

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments.timing import median_time
from vonet_jax import process_setup
from vonet_jax.models.attention import ParallelAttention, RecurrentAttention

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/movi_a.py", "Config file.", lock_config=True)
flags.DEFINE_string("out_dir", "experiments/results/attention_timing", "Output folder.")
flags.DEFINE_list("slots", ["1", "2", "4", "8", "11", "16", "24", "32"], "Values of K.")
flags.DEFINE_integer("repeats", 5, "Timed runs per point (median reported).")


def time_module(module, features, r, repeats):
  params = jax.jit(module.init)(jax.random.key(0), features, r)
  fn = jax.jit(module.apply)
  return median_time(lambda: fn(params, features, r), repeats, warmup=1)


def main(argv):
  del argv
  process_setup.prepare()  # as vonet_jax.main does
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  cfg = ml_collections.FrozenConfigDict(FLAGS.config.model)
  side = cfg.resolution // 2  # the backbone's first block has stride 2
  features = jax.random.normal(jax.random.key(1), (1, side, side, cfg.feature_size))
  rows = []
  for k in map(int, FLAGS.slots):
    r = jax.random.normal(jax.random.key(2), (1, k, cfg.slot_size))
    parallel = time_module(ParallelAttention(cfg), features, r, FLAGS.repeats)
    recurrent = time_module(RecurrentAttention(cfg), features, r, FLAGS.repeats)
    rows.append(dict(slots=k, vonet_parallel_s=parallel, monet_recurrent_s=recurrent,
                     ratio=recurrent / parallel))
    print(f"K={k:3d}  VONet parallel {parallel * 1e3:9.1f} ms   MONet recurrent "
          f"{recurrent * 1e3:9.1f} ms   ratio {recurrent / parallel:5.2f}", flush=True)
  device = jax.devices()[0].device_kind
  with open(os.path.join(FLAGS.out_dir, "timing.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) + ["device"])
    writer.writeheader()
    for row in rows:
      writer.writerow(dict(row, device=device))
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
  ks = [row["slots"] for row in rows]
  ax.plot(ks, [row["vonet_parallel_s"] * 1e3 for row in rows], "o-", label="VONet (parallel)")
  ax.plot(ks, [row["monet_recurrent_s"] * 1e3 for row in rows], "s-", label="MONet (recurrent)")
  ax.set_xlabel("slots K")
  ax.set_ylabel("ms per frame")
  ax.set_title(f"Attention masks of one {cfg.resolution}x{cfg.resolution} frame ({device})",
               fontsize=8)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out_dir, "timing.png"))
  print(f"Wrote {FLAGS.out_dir}/timing.csv and timing.png ({len(rows)} points on {device}).")


if __name__ == "__main__":
  app.run(main)
