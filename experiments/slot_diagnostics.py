"""Slot diagnostics of every checkpoint of a run (see vonet_jax/slot_diagnostics.py).

    python -m experiments.slot_diagnostics --config=configs/synthetic_learn.py \\
        --workdir=runs/learn --num_videos=8 --json_out=runs/learn/slot_diagnostics.json

Prints one row per kept checkpoint: slot spread and share of pixels above the mask threshold at
frames 0, 4 and the last (threshold: config.eval.mask_threshold); FG-ARI of argmax masks (no
threshold) and per frame (frames 0, 4 and the last scored as images, with the threshold); token
cross-entropy given the frame's own slots, another video's slots and zero slots;
dVAE words used by the frames' tokens (of V) and their entropy. --untrained adds step 0, the
variables the run started from. The JSON has the per-frame lists of every measurement.
About 10-30 s per checkpoint on a CPU for the CPU configs.
"""
import json

import optax
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from vonet_jax import checkpointing, data, evaluate, slot_diagnostics, train_step

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file of the run.", lock_config=True)
flags.DEFINE_string("workdir", None, "Workdir of the run.")
flags.DEFINE_integer("num_videos", 8, "First validation videos used (at least 2).")
flags.DEFINE_list("steps", None, "Only these checkpoint steps (default: every kept one).")
flags.DEFINE_string("json_out", None, "Also write the rows to this JSON file.")
flags.DEFINE_bool("untrained", False, "Also a row for step 0: the variables the run started "
                  "from (the config's seed, initialised as vonet_jax.train does).")


def main(argv):
  del argv
  config = FLAGS.config
  videos = list(data.validation_videos(config, FLAGS.num_videos))
  with checkpointing.Checkpointer(epath.Path(FLAGS.workdir) / "checkpoints") as ckpt:
    steps = ckpt.all_steps()
  if FLAGS.steps:
    steps = [s for s in steps if str(s) in FLAGS.steps]
  print(f"| step | spread f0 / f4 / last | above {config.eval.mask_threshold} f0 / f4 / last | "
        "FG-ARI argmax | FG-ARI per frame f0 / f4 / last | token CE own / other video / zero | "
        "dVAE words used (entropy) |")
  print("|---|---|---|---|---|---|---|")
  rows = []
  for step in ([0] if FLAGS.untrained else []) + steps:
    if step == 0:  # the run's initial variables, not a checkpoint
      state = train_step.init_train_state(config, train_step.model_key(config), optax.identity())
      variables = dict(params=state.params, batch_stats=state.batch_stats)
    else:
      _, variables = evaluate.restore_variables(config, FLAGS.workdir, step)
    d = slot_diagnostics.diagnose(config, variables, videos)
    rows.append(dict(step=step, **d))
    at = lambda xs, scale=1, fmt=".2f": " / ".join(f"{scale * xs[i]:{fmt}}" for i in (0, 4, -1))
    ce = d["token_ce"]
    print(f"| {step} | {at(d['slot_spread'])} | {at(d['mask_above_threshold'])} | "
          f"{100 * d['fg_ari_argmax']:.1f} | {at(d['fg_ari_per_frame'], 100, '.1f')} | "
          f"{ce['own']:.1f} / {ce['other_video']:.1f} / {ce['zero']:.1f} | "
          f"{d['codebook']['words']} ({d['codebook']['entropy']:.2f}) |",
          flush=True)
  if FLAGS.json_out:
    epath.Path(FLAGS.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  app.run(main)
