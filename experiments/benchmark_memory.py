"""Compiled memory and FLOPs of the full train step (MOVi-A, B=32 by default), without running it.

    python -m experiments.benchmark_memory --config=configs/movi_a.py --json_out=mem.json

For each memory option (plain; remat; bfloat16; remat + bfloat16) prints XLA's
`memory_analysis` of the compiled update (arguments + outputs + temporaries - aliased; works on
the CPU backend without running) and its `cost_analysis` FLOPs. Then splits the FLOPs of one
update (forward + backward, all B*T frames) by part: backbone, U-Net (with its input convs),
mask transformer, decoder, dVAE, from each part compiled alone at the update's shapes. Expected
wall time on a 2-core CPU: 20-30 minutes (compilation only).
"""
import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from experiments.compiled_stats import compiled_cost, compiled_figures
from experiments.model_parts import bulk_key, grad_function, model_parts
from vonet_jax import optim, process_setup, sharding, train_step

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/movi_a.py", "Config file.", lock_config=True)
flags.DEFINE_list("variants", ["plain", "remat", "bf16", "remat_bf16"], "Memory options.")
flags.DEFINE_bool("breakdown", True, "Also split the FLOPs by part.")
flags.DEFINE_string("json_out", None, "Also write the figures to this JSON file.")


def compiled_update(config):
  mesh = sharding.make_mesh()
  optimizer = optim.make_optimizer(config)
  state = jax.eval_shape(lambda: train_step.init_train_state(config, jax.random.key(0), optimizer))
  b, t, res = config.train.batch_size, config.train.segment_length, config.data.resolution
  m = config.model
  batch = dict(frames=jax.ShapeDtypeStruct((b, t, res, res, 3), jnp.uint8),
               state=jax.ShapeDtypeStruct((b, m.num_slots, m.slot_size), jnp.float32),
               frame_index=jax.ShapeDtypeStruct((b, t), jnp.int32),
               first=jax.ShapeDtypeStruct((b, t), jnp.bool_))
  step = train_step.make_train_step(config, optimizer, mesh)
  return step.lower(state, batch, jax.ShapeDtypeStruct((), jnp.int32)).compile()


def breakdown(config) -> dict:
  """TFLOP of forward + backward of each part (`model_parts`), from XLA's cost analysis."""
  flops = {}
  for name, (module, args, kwargs) in model_parts(config).items():
    grad, variables = grad_function(module, args, kwargs, bulk_key(config, 1))
    flops[name] = compiled_cost(grad.lower(variables).compile()) / 1e12
  return flops


def main(argv):
  del argv
  process_setup.prepare()  # as vonet_jax.main does
  figures = dict(config=FLAGS.config.data.name, batch_size=FLAGS.config.train.batch_size,
                 device=str(jax.devices()[0].device_kind), variants={})
  for variant in FLAGS.variants:
    config = FLAGS.config.copy_and_resolve_references()
    config.model.remat = "remat" in variant
    config.model.compute_dtype = "bfloat16" if "bf16" in variant else "float32"
    start = time.perf_counter()
    figures["variants"][variant] = dict(compiled_figures(compiled_update(config)),
                                        compile_s=time.perf_counter() - start)
    print(variant, json.dumps(figures["variants"][variant]), flush=True)
  if FLAGS.breakdown:
    figures["tflops_by_part"] = breakdown(FLAGS.config)
    print("TFLOP by part (forward + backward):", json.dumps(figures["tflops_by_part"]))
  print(json.dumps(figures, indent=1))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  app.run(main)
