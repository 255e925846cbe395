"""Where the CPU time of one update goes: each part of the model timed alone, forward + backward.

    python -m experiments.benchmark_parts --config=configs/movi_a.py --batch_size=4 \\
        --json_out=experiments/results/parts_movi_a_b4.json

Runs each part of `experiments.model_parts` (backbone, U-Net with its input convs, mask transformer,
dVAE, decoder) alone at the shapes of one update of B segments x T frames: jitted gradient of the
sum of its outputs w.r.t. its parameters, compile time excluded, median of `--repeats` runs,
`block_until_ready`; dropout and Gumbel keys of the kind `--config.train.bulk_rng` says. Prints
seconds, XLA's FLOPs and memory traffic ("bytes accessed") and the rates achieved per part, so
that a slow update can be traced to the part (and kind of op) that is slow. The parts leave out
the slot dynamics (GRU, posterior, prior, KL) and the losses, which are small.
Expected wall time at MOVi-A B=4 on 2 CPU cores: about 3 minutes.
"""
import json

import jax
from absl import flags
from ml_collections import config_flags

from experiments.compiled_stats import compiled_cost
from experiments.model_parts import compiled_gradient, model_parts
from experiments.timing import median_time
from vonet_jax import process_setup

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/movi_a.py", "Config file.", lock_config=True)
flags.DEFINE_integer("batch_size", 4, "Segments per update (frames = batch_size x T).")
flags.DEFINE_integer("repeats", 3, "Timed runs per part (median reported).")
flags.DEFINE_list("parts", None, "Only these parts (default: all).")
flags.DEFINE_string("json_out", None, "Also write the figures to this JSON file.")


def time_part(config, module, args, kwargs, repeats: int) -> dict:
  compiled, variables = compiled_gradient(config, module, args, kwargs)
  seconds = median_time(lambda: compiled(variables), repeats, warmup=1)
  gflops = compiled_cost(compiled) / 1e9
  gbytes = compiled_cost(compiled, "bytes accessed") / 1e9  # XLA's estimate of memory traffic
  return dict(seconds=seconds, gflops=gflops, gflops_per_s=gflops / seconds, gbytes=gbytes,
              gbytes_per_s=gbytes / seconds)


def main(argv):
  del argv
  config = FLAGS.config.copy_and_resolve_references()
  config.train.batch_size = FLAGS.batch_size
  parts = model_parts(config)
  figures = dict(config=config.data.name, batch_size=FLAGS.batch_size,
                 bulk_rng=config.train.bulk_rng,
                 frames=FLAGS.batch_size * config.train.segment_length,
                 device=str(jax.devices()[0].device_kind), parts={})
  for name in FLAGS.parts or parts:
    figures["parts"][name] = time_part(config, *parts[name], FLAGS.repeats)
    print(name, json.dumps(figures["parts"][name]), flush=True)
  total = sum(p["seconds"] for p in figures["parts"].values())
  print("| part | s (fwd + bwd) | share | GFLOP | GFLOP/s | GB accessed | GB/s |\n"
        "|---|---|---|---|---|---|---|")
  for name, p in figures["parts"].items():
    print(f"| {name} | {p['seconds']:.2f} | {p['seconds'] / total:.0%} | {p['gflops']:.0f} | "
          f"{p['gflops_per_s']:.0f} | {p['gbytes']:.0f} | {p['gbytes_per_s']:.0f} |")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  process_setup.run(main)  # as vonet_jax.main: jemalloc, Eigen convolutions and dots
