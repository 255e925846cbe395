"""The dVAE alone: how many vocabulary words it keeps using under a Gumbel-temperature schedule.

    python -m experiments.dvae_codebook --config=configs/synthetic_learn.py --steps=2000
    python -m experiments.dvae_codebook --config=configs/synthetic_learn.py --steps=2000 \\
        --config.train.tau_steps=133     # tau 0.1 from iteration 133 (the earlier config)

Trains only the config's dVAE (its own reconstruction loss, the training step's "dvae"
optimiser group `optim.dvae_optimizer`, the config's tau schedule `schedules.gumbel_temperature`)
on random frames of the first `--train_videos` training videos, B = batch_size x segment_length
frames per step, and every
`--every` steps prints the validation frames' squared error (summed over pixels, per frame,
relaxed sample and hard tokens) and the words their tokens use (of V) with their entropy.
Within the full model the dVAE is trained the same way (no other gradient reaches it), on replay
frames instead. About 80 ms per step for configs/synthetic_learn.py on 2 CPU cores (2000 steps:
3 min). Writes the rows to --json_out when given.
"""
import itertools
import json

from absl import app, flags
from etils import epath
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from vonet_jax import data, optim, schedules, slot_diagnostics
from vonet_jax.models.dvae import DVAE

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
flags.DEFINE_integer("steps", 2000, "dVAE updates.")
flags.DEFINE_integer("every", 500, "Report every this many updates.")
flags.DEFINE_integer("train_videos", 150, "Training videos whose frames are sampled.")
flags.DEFINE_integer("val_videos", 8, "Validation videos whose frames are scored.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, frame sampling and Gumbel noise.")
flags.DEFINE_string("json_out", None, "Also write the rows to this JSON file.")


def frames_of(videos) -> np.ndarray:
  """Dicts with video uint8 [T, H, W, 3] -> float32 frames [N*T, H, W, 3] in [0, 1]."""
  x = np.stack([v["video"] for v in videos])
  return x.reshape((-1,) + x.shape[2:]).astype(np.float32) / 255.0


def main(argv):
  del argv
  config = FLAGS.config
  m, t = config.model.dvae, config.train
  train = frames_of(itertools.islice(data.train_videos(config), FLAGS.train_videos))
  val = frames_of(data.validation_videos(config, FLAGS.val_videos))
  dvae = DVAE(vocab_size=m.vocab_size, hidden=m.hidden,
              relu_before_log_softmax=m.relu_before_log_softmax)
  key = jax.random.key(FLAGS.seed)
  params = dvae.init(key, train[:1], 1.0, key)
  opt = optim.dvae_optimizer(config)  # the training step's "dvae" group
  state = opt.init(params)

  @jax.jit
  def update(params, state, x, step, key):
    tau = schedules.gumbel_temperature(config, step)
    loss = lambda p: dvae.apply(p, x, tau, key)["mse"].mean()
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  @jax.jit
  def score(params, x, key):
    out = dvae.apply(params, x, t.tau_end, key)
    hard = dvae.apply(params, out["tokens"], method=DVAE.decode_tokens)
    return out["mse"].mean(), jnp.square(hard - x).sum((1, 2, 3)).mean(), out["tokens"]

  rng = np.random.default_rng(FLAGS.seed)
  batch = t.batch_size * t.segment_length
  rows = []
  print("| step | tau | val squared error relaxed / hard | words used (entropy) |")
  print("|---|---|---|---|")
  for step in range(FLAGS.steps + 1):
    if step % FLAGS.every == 0 or step == FLAGS.steps:
      relaxed, hard, tokens = score(params, val, jax.random.fold_in(key, FLAGS.steps + 1))
      use = slot_diagnostics.codebook_use(tokens)
      tau = float(schedules.gumbel_temperature(config, step))
      rows.append(dict(step=step, tau=tau, mse_relaxed=float(relaxed), mse_hard=float(hard), **use))
      print(f"| {step} | {tau:.2f} | {float(relaxed):.1f} / {float(hard):.1f} | "
            f"{use['words']} of {m.vocab_size} ({use['entropy']:.2f}) |", flush=True)
    if step < FLAGS.steps:
      x = train[rng.integers(0, len(train), batch)]
      params, state = update(params, state, x, step, jax.random.fold_in(key, step))
  if FLAGS.json_out:
    epath.Path(FLAGS.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  app.run(main)
