"""Tests of vonet_jax.models.random_box: a box of a Bernoulli draw without the rest of it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax.extend.random import threefry2x32_p

from vonet_jax.models.random_box import bernoulli, bernoulli_box, gumbel, threefry2x32

SHAPE = (3, 2, 16, 16)
BOXES = [((0, 0, 0, 0), SHAPE), ((0, 0, 4, 0), (3, 2, 4, 8)), ((1, 1, 3, 5), (2, 1, 5, 11))]


@pytest.mark.parametrize("key", [jax.random.key(5), jax.random.PRNGKey(7)], ids=["typed", "raw"])
@pytest.mark.parametrize("start,size", BOXES)
@pytest.mark.parametrize("axes", [None, (0, 1, 3, 2), (2, 0, 3, 1)])
def test_threefry_box_is_the_box_of_the_full_draw(key, start, size, axes):
  full = jax.random.bernoulli(key, 0.9, SHAPE)
  box = jax.jit(lambda k: bernoulli_box(k, 0.9, SHAPE, start, size, axes))(key)
  expected = full[tuple(slice(s, s + n) for s, n in zip(start, size))]
  np.testing.assert_array_equal(box, expected if axes is None else expected.transpose(axes))


def test_unrolled_threefry_equals_jax_primitive():
  rng = np.random.default_rng(0)
  k1, k2 = (np.uint32(v) for v in rng.integers(0, 2 ** 32, 2))
  counts = [jnp.asarray(rng.integers(0, 2 ** 32, (1000,)), jnp.uint32) for _ in range(2)]
  ours = jax.jit(threefry2x32)(k1, k2, *counts)
  theirs = threefry2x32_p.bind(jnp.uint32(k1), jnp.uint32(k2), *counts)
  for a, b in zip(ours, theirs):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("key", [jax.random.key(3), jax.random.PRNGKey(4)], ids=["typed", "raw"])
def test_gumbel_is_jax_gumbel(key):
  shape = (4, 8, 8, 64)
  ours = jax.jit(lambda k: gumbel(k, shape))(key)
  theirs = jax.jit(lambda k: jax.random.gumbel(k, shape, jnp.float32))(key)
  np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("key", [jax.random.key(8), jax.random.PRNGKey(9),
                                 jax.random.key(10, impl="rbg")], ids=["typed", "raw", "rbg"])
def test_bernoulli_is_jax_bernoulli(key):
  ours = jax.jit(lambda k: bernoulli(k, 0.7, SHAPE))(key)
  np.testing.assert_array_equal(ours, jax.random.bernoulli(key, 0.7, SHAPE))


def test_other_key_impls_draw_the_box_with_the_right_rate():
  key = jax.random.wrap_key_data(jnp.arange(4, dtype=jnp.uint32), impl="rbg")
  boxes = [bernoulli_box(key, 0.8, (4, 64, 64), (0, r, 0), (4, 32, 64)) for r in (0, 32)]
  assert boxes[0].shape == (4, 32, 64)
  assert not np.array_equal(boxes[0], boxes[1])  # boxes at other places differ
  assert abs(float(jnp.mean(boxes[0])) - 0.8) < 0.02  # 8192 draws: std 0.0044


def test_box_outside_the_shape_is_rejected():
  with pytest.raises(ValueError, match="not inside"):
    bernoulli_box(jax.random.key(0), 0.5, (4, 4), (2, 0), (3, 4))
  with pytest.raises(ValueError, match="do not match"):
    bernoulli_box(jax.random.key(0), 0.5, (4, 4), (0,), (4,))
  with pytest.raises(ValueError, match="not a permutation"):
    bernoulli_box(jax.random.key(0), 0.5, (4, 4), (0, 0), (4, 4), axes=(1, 1))
