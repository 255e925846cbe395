"""Tests of vonet_jax.models.lean_backward: the same values and gradients as the plain ops."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models.layers import Dense
from vonet_jax.models.lean_backward import (InstanceNorm, LayerNorm, max_pool2, normalize_project,
                                            relu)


def _inputs(shape, seed=0):
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  x[..., 0] = 0.0  # ReLU's kink and, after it, tied window maxima
  x[0, 0, 0, 1] = x[0, 0, 1, 1] = x[0, 1, 0, 1] = 0.5  # three tied maxima in one window
  return jnp.asarray(x)


def test_relu_same_values_and_gradients_as_jax():
  x = _inputs((3, 8, 6, 5))
  w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
  loss = lambda f: (lambda y: jnp.sum(f(y) * w))
  np.testing.assert_array_equal(relu(x), jax.nn.relu(x))
  np.testing.assert_array_equal(jax.grad(loss(relu))(x), jax.grad(loss(jax.nn.relu))(x))
  # Zero gradient at 0, as jax's ReLU (the kink column) and nonzero elsewhere where x > 0.
  g = jax.grad(loss(relu))(x)
  assert np.all(np.asarray(g)[..., 0] == 0) and np.all(np.asarray(g)[np.asarray(x) > 0] != 0)


def test_max_pool_same_values_and_gradients_as_a_max_reduction():
  # jax's max reduction splits a window's gradient among tied maxima; so does max_pool2.
  x = _inputs((3, 8, 6, 5))
  plain = lambda y: y.reshape(3, 4, 2, 3, 2, 5).max(axis=(2, 4))
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4, 3, 5)), jnp.float32)
  loss = lambda pool: (lambda y: jnp.sum(jnp.sin(pool(y)) * w))
  np.testing.assert_array_equal(max_pool2(x), plain(x))
  grad = jax.grad(loss(max_pool2))(x)
  np.testing.assert_array_equal(grad, jax.grad(loss(plain))(x))
  share = np.asarray(grad)[0, :2, :2, 1]  # the window with three tied maxima
  np.testing.assert_allclose(share[share != 0], np.full(3, share.sum() / 3), rtol=1e-6)
  with_nan = x.at[1, 2, 3, 4].set(jnp.nan)  # a NaN wins its window, as in the reduction
  np.testing.assert_array_equal(max_pool2(with_nan), plain(with_nan))
  assert np.isnan(np.asarray(max_pool2(with_nan))[1, 1, 1, 4])


def test_max_pool_equals_flax_max_pool_after_relu():
  """nn.max_pool's values, and its gradient through the ReLU before it (ties, which only ReLU
  zeros have after it, get no gradient either way)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8, 6, 5)), jnp.float32)
  plain = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(max_pool2(x), plain(x))
  loss = lambda pool: (lambda y: jnp.sum(jnp.sin(pool(relu(y))) * jnp.arange(5.0)))
  np.testing.assert_array_equal(jax.grad(loss(max_pool2))(x), jax.grad(loss(plain))(x))


@pytest.mark.parametrize("lean, plain", [
    (InstanceNorm(epsilon=1e-5), nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5)),
    (LayerNorm(epsilon=1e-5), nn.LayerNorm(epsilon=1e-5))], ids=["instance", "layer"])
def test_norms_equal_flax_group_norm_and_layer_norm(lean, plain):
  """InstanceNorm = GroupNorm with one channel per group; LayerNorm = nn.LayerNorm (last axis)."""
  x = jnp.asarray(np.random.default_rng(3).normal(2.0, 3.0, size=(4, 6, 5, 7)), jnp.float32)
  params = plain.init(jax.random.key(0), x)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      lean.init(jax.random.key(0), x))
  params = jax.tree_util.tree_map(  # scale and bias away from 1 and 0
      lambda p: p + jax.random.normal(jax.random.key(p.size), p.shape), params)
  w = jnp.asarray(np.random.default_rng(4).normal(size=x.shape), jnp.float32)
  loss = lambda module: (lambda p, y: jnp.sum(jnp.sin(module.apply(p, y)) * w))
  np.testing.assert_allclose(lean.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)
  grads = jax.grad(loss(lean), argnums=(0, 1))(params, x)
  ref = jax.grad(loss(plain), argnums=(0, 1))(params, x)
  for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_normalize_project_equals_layer_norm_then_dense_layers():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(1.0, 2.0, size=(3, 10, 8)), jnp.float32)
  scale, bias = (jnp.asarray(rng.normal(size=8), jnp.float32) for _ in range(2))
  kernels = tuple(jnp.asarray(rng.normal(size=(8, n)), jnp.float32) for n in (8, 5))
  weights = [jnp.asarray(rng.normal(size=(3, 10, n)), jnp.float32) for n in (8, 5)]

  def plain(x, scale, bias, kernels):
    y = nn.LayerNorm(epsilon=1e-5).apply({"params": dict(scale=scale, bias=bias)}, x)
    return tuple(Dense(k.shape[1], use_bias=False).apply({"params": dict(kernel=k)}, y)
                 for k in kernels)

  lean = lambda x, scale, bias, kernels: normalize_project(x, scale, bias, kernels, 1e-5)
  for out, ref in zip(lean(x, scale, bias, kernels), plain(x, scale, bias, kernels)):
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  loss = lambda f: (lambda *args: sum(jnp.sum(jnp.sin(o) * w) for o, w in zip(f(*args), weights)))
  grads = jax.grad(loss(lean), argnums=(0, 1, 2, 3))(x, scale, bias, kernels)
  ref = jax.grad(loss(plain), argnums=(0, 1, 2, 3))(x, scale, bias, kernels)
  for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
