"""The model's parts alone at the shapes of one update, for per-part FLOPs and timings."""
import importlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from vonet_jax import train_step

# The --part flag of the scripts that can take one part instead of the whole update
# (compare_revisions, profile_ops, cycles_by_library), defined once here so that all import into
# one process.
flags.DEFINE_enum("part", None,
                  ["backbone", "unet", "mask_transformer", "dvae", "decoder", "collection"],
                  "A part of experiments.model_parts alone (forward + backward), or the replay "
                  "collection step, instead of the whole update.")


def bulk_key(config, seed: int):
  """A key of the kind `train.bulk_rng` gives dropout and Gumbel noise in training."""
  return train_step.bulk_key(config, jax.random.key(seed))


def grad_function(module, args, kwargs, dropout_key):
  """(jitted gradient of sum(module(*args, **kwargs)) w.r.t. its parameters, abstract
  parameters)."""
  rngs = {"params": jax.random.key(0), "dropout": dropout_key}
  variables = jax.eval_shape(lambda: module.init(rngs, *args, **kwargs))

  def loss(v):
    out = module.apply(v, *args, **kwargs, rngs={"dropout": dropout_key},
                       mutable=["batch_stats"])[0]
    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree_util.tree_leaves(out))

  return jax.jit(jax.grad(loss)), variables


def compiled_gradient(config, module, args, kwargs):
  """(the compiled `grad_function` of a part, its parameters: N(0, 0.05), seed 0), with the
  dropout and Gumbel keys of the kind `train.bulk_rng` says."""
  grad, abstract = grad_function(module, args, kwargs, bulk_key(config, 1))
  variables = jax.tree_util.tree_map(
      lambda s: np.random.default_rng(0).normal(0.0, 0.05, s.shape).astype(s.dtype), abstract)
  return grad.lower(variables).compile(), variables


class UNetWithInput(nn.Module):
  """The U-Net (without the mask transformer) on its input: features [N, h, w, C], masks
  [N, K, h, w], context [N, K, C_in] -> delta logits [N, K, h, w]."""
  cfg: Any  # config.model
  package: str = "vonet_jax"

  @nn.compact
  def __call__(self, features, masks, context):
    cfg = self.cfg
    unet_input = _models(self.package, "unet_input").unet_input_from_config(cfg)
    x = unet_input(features, masks, jnp.log(masks), context)
    return _models(self.package, "unet").UNet(tuple(cfg.unet_channels), cfg.unet_fc, None)(x)


def _models(package: str, name: str):
  """The module `{package}.models.{name}`."""
  return importlib.import_module(f"{package}.models.{name}")


def model_parts(config, package: str = "vonet_jax") -> dict:
  """name -> (module, args, kwargs): each part of the model alone, at the shapes of one update
  (all B*T frames): backbone, U-Net (with its input maps, per `model.unet_input`), mask
  transformer, dVAE, decoder. Gradients w.r.t. the parameters only (not the parts' inputs).
  `package`: the package whose modules to take (another revision's copy:
  `experiments.compare_revisions`)."""
  Backbone, DVAE = _models(package, "backbone").Backbone, _models(package, "dvae").DVAE
  SlotTransformer = _models(package, "transformer").SlotTransformer
  make_decoder = _models(package, "vonet").make_decoder
  cfg = ml_collections.FrozenConfigDict(config.model)
  n = config.train.batch_size * config.train.segment_length  # frames per update
  res, k, h = config.data.resolution, cfg.num_slots, config.data.resolution // 2
  tokens = (res // 4) ** 2
  return dict(
      backbone=(Backbone(cfg.backbone_channels, cfg.backbone_blocks, cfg.feature_size),
                (jnp.ones((n, res, res, 3)), True), {}),
      unet=(UNetWithInput(cfg, package), (jnp.ones((n, h, h, cfg.feature_size)),
                                 jnp.full((n, k, h, h), 1.0 / k),
                                 jnp.ones((n, k, cfg.feature_size))), {}),
      mask_transformer=(SlotTransformer(**cfg.mask_transformer), (jnp.ones((n, k, cfg.unet_fc)),),
                        {}),
      dvae=(DVAE(cfg.dvae.vocab_size, cfg.dvae.hidden),
            (jnp.ones((n, res, res, 3)), 0.5, bulk_key(config, 0)), {}),
      decoder=(make_decoder(cfg, tokens),
               (jnp.ones((n, k, cfg.slot_size)), jnp.ones((n, tokens), jnp.int32)),
               dict(deterministic=False)))
