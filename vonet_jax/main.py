"""Entry point: python -m vonet_jax.main --config=configs/movi_a.py --workdir=DIR [--mode=...].

Modes: train (train, resuming from DIR/checkpoints if present), eval (score the latest or
--config.eval.checkpoint_step checkpoint on the validation split), train_eval (train, then
eval: the README's main command). Multi-host: when the standard coordinator settings are in the
environment (JAX_COORDINATOR_ADDRESS, ...), jax.distributed.initialize() is called first.
"""
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and evaluation.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "train_eval"], "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_libraries():
  """Keeps the console readable: no TensorFlow C++ chatter, no orbax per-save INFO lines."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)


def _initialize_distributed():
  """Multi-process setup from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (or
  whatever cluster jax.distributed detects by itself, e.g. SLURM); CPU processes use gloo."""
  import jax
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address:
    return
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = dict(coordinator_address=address)
  if "JAX_NUM_PROCESSES" in os.environ:
    kwargs.update(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)


def main(argv):
  del argv
  _quiet_libraries()
  # TensorFlow (imported by TFDS and CLU) must not grab GPU memory that JAX needs.
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  _initialize_distributed()
  from vonet_jax import evaluate, train
  from vonet_jax.errors import UserError
  config = FLAGS.config
  try:
    if FLAGS.mode in ("train", "train_eval"):
      result = train.train_and_evaluate(config, FLAGS.workdir)
      print(f"Trained to iteration {result['iteration']}; "
            f"last loss {result['metrics'].get('loss', float('nan')):.4g}; "
            f"checkpoints in {FLAGS.workdir}/checkpoints")
    if FLAGS.mode in ("eval", "train_eval"):
      report = evaluate.run_evaluation(config, FLAGS.workdir)
      s = report["across_seeds"]
      print(f"Evaluated step {report['step']} on {report['num_videos']} validation videos "
            f"x {s['fg_ari']['seeds']} seed(s): FG-ARI {100 * s['fg_ari']['mean']:.1f} "
            f"± {100 * s['fg_ari']['std']:.1f}, mIoU {100 * s['miou']['mean']:.1f} "
            f"± {100 * s['miou']['std']:.1f} -> {FLAGS.workdir}/eval/{report['step']}/metrics.json")
  except UserError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  from vonet_jax import process_setup
  process_setup.run(main)  # jemalloc, freed memory kept, Eigen convs and dots; then main
