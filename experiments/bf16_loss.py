"""bfloat16 compute against float32: the training loss over the first updates of the small config.

    python -m experiments.bf16_loss --out_dir=experiments/results/bf16_loss

Trains configs/synthetic_small.py twice from the same seed (same initial parameters, same data
stream, same replay sampling), once with model.compute_dtype=float32 and once with bfloat16
(float32 parameters and losses), logging the loss every 10 iterations, and reports the relative
difference of the bf16 loss to the float32 loss over the first --updates updates (mean and max
of |bf16 - fp32| / fp32 at the logged iterations, and the mean loss of the last 50 updates of
each). Writes losses.csv, summary.json and loss.png. Expected wall time on a 2-core CPU: about
10 minutes.
"""
import csv
import json
import pathlib

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "experiments/results/bf16_loss", "Output folder.")
flags.DEFINE_string("workdir", "/tmp/vonet_bf16_loss", "Training workdirs go below this.")
flags.DEFINE_integer("updates", 200, "Updates compared.")


def train(dtype: str, workdir: pathlib.Path) -> dict[int, float]:
  from configs import synthetic_small
  from vonet_jax import schedules, summaries, train as trainer
  config = synthetic_small.get_config()
  config.model.compute_dtype = dtype
  first = schedules.first_training_iteration(config)
  config.train.num_iterations = first + FLAGS.updates - 1
  config.log_scalars_every = 10
  config.log_images_every = 10 ** 9
  config.checkpoint_every = 10 ** 9
  trainer.train_and_evaluate(config, str(workdir))
  return summaries.read_scalars(workdir, "loss")


def main(argv):
  del argv
  out = pathlib.Path(FLAGS.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  root = pathlib.Path(FLAGS.workdir)
  losses = {dtype: train(dtype, root / dtype) for dtype in ("float32", "bfloat16")}
  steps = sorted(set(losses["float32"]) & set(losses["bfloat16"]))
  fp32 = np.array([losses["float32"][s] for s in steps])
  bf16 = np.array([losses["bfloat16"][s] for s in steps])
  rel = np.abs(bf16 - fp32) / fp32
  tail = lambda x: float(x[-5:].mean())  # last 5 logged points = last 50 updates
  summary = dict(updates=FLAGS.updates, logged_iterations=steps,
                 mean_relative_difference=float(rel.mean()),
                 max_relative_difference=float(rel.max()),
                 final_loss_float32=tail(fp32), final_loss_bfloat16=tail(bf16))
  with open(out / "losses.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["iteration", "loss_float32", "loss_bfloat16"])
    writer.writerows(zip(steps, fp32, bf16))
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 2.8), dpi=110)
  ax.plot(steps, fp32, label="float32")
  ax.plot(steps, bf16, "--", label="bfloat16 compute")
  ax.set(xlabel="iteration", ylabel="loss", yscale="log", title="synthetic_small")
  ax.legend()
  fig.tight_layout()
  fig.savefig(out / "loss.png")
  print(f"bf16 vs fp32 over {FLAGS.updates} updates: mean |rel. diff| "
        f"{100 * summary['mean_relative_difference']:.2f}%, max "
        f"{100 * summary['max_relative_difference']:.2f}%; loss of the last 50 updates "
        f"{summary['final_loss_float32']:.1f} (fp32) vs {summary['final_loss_bfloat16']:.1f} "
        f"(bf16)")


if __name__ == "__main__":
  app.run(main)
