"""The paper's Figure 6 ablations as config overrides on the Table 1 launcher.

    python -m experiments.ablations --root=runs/ablations --datasets=movi_a --data_dir=/data/tfds
    python -m experiments.ablations --root=runs/ablations --dry_run
    # the CPU-scale version on the built-in dataset (configs/synthetic_learn.py):
    python -m experiments.ablations --root=runs/ablations_cpu --config=synthetic_learn \\
        --ablations=full,wo_unet --seeds=1

Variants: full (VONet), wo_unet (masks = estimated masks), kl_div20 / kl_div200 / kl_div20k
(KL weight divided by 20, 200, 20000), wo_replay (fresh slots for every segment), wo_klbal
(kappa = 0.5). Aggregates FG-ARI / mIoU (mean ± std over seeds) into one markdown table and one
bar plot per dataset (<root>/ablations_<dataset>.png), plus <root>/ablations.json.
Expected wall time: one full training run per (variant, dataset, seed).
"""
import json
import pathlib

from absl import app, flags

from experiments import launcher

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "runs/ablations", "Folder of the runs' workdirs.")
flags.DEFINE_list("datasets", ["movi_a", "movi_b", "movi_c", "movi_d", "movi_e"],
                  "Config names (configs/<name>.py).")
flags.DEFINE_string("config", None, "Use this config for every dataset entry (e.g. synthetic_learn).")
flags.DEFINE_list("ablations", None, "Subset of variants (default: all).")
flags.DEFINE_integer("seeds", 3, "Seeds per variant.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_list("extra", [], "Extra --config.x=y overrides for every run.")
flags.DEFINE_bool("dry_run", False, "Only print the commands.")

VARIANTS = {
    "full": [],
    "wo_unet": ["--config.model.use_unet=False"],
    "kl_div20": ["--config.model.kl_weight_divisor=20"],
    "kl_div200": ["--config.model.kl_weight_divisor=200"],
    "kl_div20k": ["--config.model.kl_weight_divisor=20000"],
    "wo_replay": ["--config.replay.enabled=False"],
    "wo_klbal": ["--config.model.kl_balance=0.5"],
}


def plot(path, dataset, rows):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  names = list(rows)
  fig, ax = plt.subplots(figsize=(1.2 * len(names) + 1, 3), dpi=110)
  x = np.arange(len(names))
  for offset, key in ((-0.2, "fg_ari"), (0.2, "miou")):
    means = [100 * np.mean(rows[n][key]) for n in names]
    stds = [100 * np.std(rows[n][key]) for n in names]
    ax.bar(x + offset, means, 0.4, yerr=stds, label=key.replace("_", "-").upper())
  ax.set_xticks(x, names, fontsize=7)
  ax.set_ylabel("%")
  ax.set_title(dataset)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)


def main(argv):
  del argv
  variants = FLAGS.ablations or list(VARIANTS)
  runs = []
  for d in FLAGS.datasets:
    config = FLAGS.config or d
    runs += [launcher.Run(f"{d}_{v}_seed{s}", config, s, VARIANTS[v])
             for v in variants for s in range(FLAGS.seeds)]
  results = launcher.run_all(runs, FLAGS.root, FLAGS.data_dir, FLAGS.extra, FLAGS.dry_run)
  if FLAGS.dry_run:
    return
  lines = ["| dataset | variant | FG-ARI | mIoU | seeds |", "|---|---|---|---|---|"]
  table = {}
  for d in FLAGS.datasets:
    rows = {}
    for v in variants:
      rows[v] = launcher.seed_scores(results, [f"{d}_{v}_seed{s}" for s in range(FLAGS.seeds)])
      lines.append(f"| {d} | {v} | {launcher.seed_mean_std(rows[v]['fg_ari'])} | "
                   f"{launcher.seed_mean_std(rows[v]['miou'])} | {FLAGS.seeds} |")
    table[d] = rows
    plot(pathlib.Path(FLAGS.root, f"ablations_{d}.png"), d, rows)
  print("\n".join(lines))
  pathlib.Path(FLAGS.root, "ablations.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
  app.run(main)
