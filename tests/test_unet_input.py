"""Tests of vonet_jax.models.unet_input: the fused U-Net input equals the plain one."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import tiny as tiny_configs

from vonet_jax.models.attention import ParallelAttention
from vonet_jax.models.unet_input import UNetInput


def _random_like(tree, seed):
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def test_fused_first_conv_equals_conv_of_the_plain_maps():
  # Non-square maps, random biases: the conv of the fused parts equals nn.Conv on the built maps,
  # in value and in the gradients w.r.t. every input and parameter.
  b, k, h, w, c, c_in, out = 2, 3, 8, 6, 5, 4, 7
  keys = jax.random.split(jax.random.key(0), 4)
  features = jax.random.normal(keys[0], (b, h, w, c))
  masks = jax.nn.softmax(jax.random.normal(keys[1], (b, k, h, w)), axis=1)
  context = jax.random.normal(keys[2], (b, k, c_in))
  inputs = (features, masks, jnp.log(masks), context)
  params = _random_like(UNetInput().init(keys[3], *inputs), 1)
  kernel = 0.3 * jax.random.normal(jax.random.key(2), (3, 3, c, out))
  weights = jax.random.normal(jax.random.key(3), (b * k, h, w, out))

  def first_conv(fused, params, kernel, *inputs):
    x = UNetInput(fused=fused).apply(params, *inputs)
    if fused:
      y = x.conv3x3(kernel)
    else:
      y = nn.Conv(out, (3, 3), padding=((1, 1), (1, 1)), use_bias=False).apply(
          {"params": {"kernel": kernel}}, x.reshape(b * k, h, w, c))
    return jnp.sum(y * weights), y

  results = [jax.value_and_grad(first_conv, argnums=(1, 2, 3, 4, 5, 6), has_aux=True)(
      fused, params, kernel, *inputs) for fused in (True, False)]
  (_, fused_y), fused_grads = results[0]
  (_, plain_y), plain_grads = results[1]
  assert fused_y.shape == (b * k, h, w, out)
  np.testing.assert_allclose(fused_y, plain_y, rtol=1e-5, atol=1e-5)
  # Evaluated alone, the fused conv computes its mask term another way (`mask_term`).
  np.testing.assert_allclose(first_conv(True, params, kernel, *inputs)[1], plain_y, rtol=1e-5,
                             atol=1e-5)
  for g, r in zip(jax.tree_util.tree_leaves(fused_grads), jax.tree_util.tree_leaves(plain_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_fused_parallel_attention_same_params_and_masks():
  config = tiny_configs.get_config()
  make = lambda mode: ParallelAttention(
      ml_collections.FrozenConfigDict(dict(config.model, unet_input=mode)))
  features = jax.random.normal(jax.random.key(0), (2, 16, 16, config.model.feature_size))
  r = jax.random.normal(jax.random.key(1), (2, config.model.num_slots, config.model.slot_size))
  params = make("plain").init(jax.random.key(2), features, r)
  fused_params = make("fused").init(jax.random.key(2), features, r)
  assert (jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(fused_params))
  for p, f in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(fused_params)):
    np.testing.assert_array_equal(p, f)  # same names, shapes and initial values
  params = _random_like(params, 3)
  plain, fused = (make(mode).apply(params, features, r)["log_masks"] for mode in ("plain", "fused"))
  np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-4)
