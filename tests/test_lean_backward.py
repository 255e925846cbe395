"""Tests of vonet_jax.models.lean_backward: the same values and gradients as the plain ops."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vonet_jax.models.lean_backward import max_pool2, relu


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


def test_max_pool_equals_flax_max_pool_after_relu():
  """nn.max_pool's values, and its gradient through the ReLU before it (ties, which only ReLU
  zeros have after it, get no gradient either way)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8, 6, 5)), jnp.float32)
  plain = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(max_pool2(x), plain(x))
  loss = lambda pool: (lambda y: jnp.sum(jnp.sin(pool(relu(y))) * jnp.arange(5.0)))
  np.testing.assert_array_equal(jax.grad(loss(max_pool2))(x), jax.grad(loss(plain))(x))
