"""The three optimiser groups of SPEC.md section 3, as one optax.multi_transform.

| group   | parameters                       | learning rate                    | clip |
| main    | everything else                  | schedules.main_learning_rate     | 0.1  |
| decoder | the transformer decoder module   | 3e-4                             | 0.1  |
| dvae    | the discrete VAE                 | 1e-3                             | none |

Adam (0.9, 0.999) with the TensorFlow-style epsilon of the authors' code (see scale_by_tf_adam),
no weight decay.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vonet_jax import schedules

GROUPS = ("main", "decoder", "dvae")


def param_group(top_level_name: str) -> str:
  """Optimiser group of a top-level parameter collection of VONet."""
  return top_level_name if top_level_name in ("decoder", "dvae") else "main"


def group_labels(params):
  """Pytree of group names with the structure of params."""
  return {name: jax.tree_util.tree_map(lambda _, g=param_group(name): g, sub)
          for name, sub in params.items()}


def split_by_group(tree):
  """{group: sub-dict of the top-level entries of tree in that group}."""
  out = {g: {} for g in GROUPS}
  for name, sub in tree.items():
    out[param_group(name)][name] = sub
  return out


class TfAdamState(NamedTuple):
  count: jnp.ndarray
  mu: optax.Updates
  nu: optax.Updates


def scale_by_tf_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam as TensorFlow (and the authors' code) applies it.

  TF adds eps to sqrt(v) before the bias correction: lr * sqrt(1 - b2^t) / (1 - b1^t) * m /
  (sqrt(v) + eps), i.e. m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2^t)). optax.adam would add eps
  to sqrt(v_hat); the two differ only in the first few hundred steps.
  """

  def init(params):
    zeros = lambda p: jnp.zeros_like(p)
    return TfAdamState(jnp.zeros([], jnp.int32), jax.tree_util.tree_map(zeros, params),
                       jax.tree_util.tree_map(zeros, params))

  def update(updates, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
    t = count.astype(jnp.float32)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    step = lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps / jnp.sqrt(c2))
    return jax.tree_util.tree_map(step, mu, nu), TfAdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def _adam(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  t = config.train
  return scale_by_tf_adam(t.adam_b1, t.adam_b2, t.adam_eps)


def dvae_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The "dvae" group's transform: Adam at the constant dVAE learning rate, no clipping."""
  return optax.chain(_adam(config), optax.scale_by_learning_rate(config.train.dvae_lr))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """optax.multi_transform over the three groups; the main schedule is offset so that its
  iteration count starts at the first training iteration."""
  t = config.train
  offset = schedules.first_training_iteration(config)
  main_lr = lambda count: schedules.main_learning_rate(config, count + offset)
  transforms = {
      "main": optax.chain(optax.clip_by_global_norm(t.clip_norm), _adam(config),
                          optax.scale_by_learning_rate(main_lr)),
      "decoder": optax.chain(optax.clip_by_global_norm(t.clip_norm), _adam(config),
                             optax.scale_by_learning_rate(t.decoder_lr)),
      "dvae": dvae_optimizer(config),
  }
  return optax.multi_transform(transforms, group_labels)
