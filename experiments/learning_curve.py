"""Plots FG-ARI and mIoU against training iterations from runs' eval/periodic.jsonl.

    python -m experiments.learning_curve --runs=runs/learn,runs/learn_wo_unet \\
        --labels=VONet,wo-UNet --kmeans=experiments/results/kmeans_synthetic.json \\
        --out=experiments/results/learning_curve_seeds.png

Iteration 0 is the untrained model. A k-means reference (experiments/kmeans_reference.py) is
drawn as a horizontal line when given.
"""
import json
import pathlib

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "Workdirs.")
flags.DEFINE_list("labels", None, "Legend labels (default: workdir names); runs may share one.")
flags.DEFINE_list("colors", None, "Matplotlib colours, one per run (e.g. seeds of a variant alike).")
flags.DEFINE_string("kmeans", None, "JSON of experiments/kmeans_reference.py.")
flags.DEFINE_string("title", "", "Plot title.")
flags.DEFINE_string("out", "learning_curve.png", "Output PNG.")


def main(argv):
  del argv
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  labels = FLAGS.labels or [pathlib.Path(r).name for r in FLAGS.runs]
  fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), dpi=110)
  colors = FLAGS.colors or [None] * len(FLAGS.runs)
  for run, label, color in zip(FLAGS.runs, labels, colors):
    rows = [json.loads(line) for line in
            (pathlib.Path(run) / "eval" / "periodic.jsonl").read_text().splitlines()]
    for ax, key in zip(axes, ("fg_ari", "miou")):
      ax.plot([r["iteration"] for r in rows], [100 * r[key]["mean"] for r in rows], "o-",
              ms=3, label=label, color=color)
    print(label, [(r["iteration"], round(100 * r["fg_ari"]["mean"], 1),
                   round(100 * r["miou"]["mean"], 1)) for r in rows])
  if FLAGS.kmeans:
    ref = json.loads(pathlib.Path(FLAGS.kmeans).read_text())
    for ax, key in zip(axes, ("fg_ari", "miou")):
      ax.axhline(100 * ref[key]["mean"], color="grey", ls="--", label="k-means")
  for ax, name in zip(axes, ("FG-ARI (%)", "mIoU (%)")):
    ax.set_xlabel("iteration")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
  handles, names = axes[0].get_legend_handles_labels()
  unique = dict(zip(names, handles))  # runs sharing a label (seeds of a variant) show once
  axes[0].legend(unique.values(), unique.keys(), fontsize=7)
  fig.suptitle(FLAGS.title, fontsize=9)
  fig.tight_layout()
  fig.savefig(FLAGS.out)
  print(f"Wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
