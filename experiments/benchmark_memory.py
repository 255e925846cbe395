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
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments.compiled_stats import compiled_figures, compiled_flops
from vonet_jax import optim, sharding, train_step
from vonet_jax.models.backbone import Backbone
from vonet_jax.models.decoder import TransformerDecoder
from vonet_jax.models.dvae import DVAE
from vonet_jax.models.transformer import SlotTransformer
from vonet_jax.models.unet import UNet

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


def grad_flops(module, *args, **kwargs) -> float:
  """FLOPs of forward + backward of sum(module(*args)) w.r.t. its parameters."""
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  variables = jax.eval_shape(lambda: module.init(rngs, *args, **kwargs))

  def loss(v):
    out = module.apply(v, *args, **kwargs, rngs={"dropout": jax.random.key(1)},
                       mutable=["batch_stats"])[0]
    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree_util.tree_leaves(out))

  return compiled_flops(jax.jit(jax.grad(loss)).lower(variables).compile())


def breakdown(config) -> dict:
  cfg = ml_collections.FrozenConfigDict(config.model)
  n = config.train.batch_size * config.train.segment_length  # frames per update
  res, k, h = config.data.resolution, cfg.num_slots, config.data.resolution // 2
  parts = dict(
      backbone=grad_flops(Backbone(cfg.backbone_channels, cfg.backbone_blocks, cfg.feature_size),
                          jnp.ones((n, res, res, 3)), True),
      unet=grad_flops(UNet(tuple(cfg.unet_channels), cfg.unet_fc, None),
                      jnp.ones((n, k, h, h, cfg.feature_size))),
      mask_transformer=grad_flops(SlotTransformer(**cfg.mask_transformer),
                                  jnp.ones((n, k, cfg.unet_fc))),
      dvae=grad_flops(DVAE(cfg.dvae.vocab_size, cfg.dvae.hidden), jnp.ones((n, res, res, 3)),
                      0.5, jax.random.key(0)),
      decoder=grad_flops(TransformerDecoder(
          cfg.dvae.vocab_size, (res // 4) ** 2, cfg.decoder.d_model, cfg.decoder.num_heads,
          cfg.decoder.num_layers, cfg.decoder.ffn_dim, cfg.decoder.dropout, cfg.mlp_hidden),
          jnp.ones((n, k, cfg.slot_size)), jnp.ones((n, (res // 4) ** 2), jnp.int32),
          deterministic=False))
  return {name: value / 1e12 for name, value in parts.items()}


def main(argv):
  del argv
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
