"""`short_broadcast.repeat` is jnp.broadcast_to: the same values, gradients to float32 rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models.short_broadcast import repeat


@pytest.mark.parametrize("shape,size,axis", [((1, 5, 3), 4, 0), ((2, 1, 3, 2), 11, 1),
                                             ((3, 1), 1, 1)])
def test_repeat_is_broadcast_to(shape, size, axis):
  y = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  full = y.shape[:axis] + (size,) + y.shape[axis + 1:]
  # A cotangent that differs along the repeated axis, so that the sum is tested.
  weights = jnp.asarray(np.random.default_rng(1).normal(size=full), jnp.float32)
  loss = lambda f: lambda y: jnp.sum(jnp.sin(f(y)) * weights)
  ours = lambda y: repeat(y, size, axis)
  plain = lambda y: jnp.broadcast_to(y, full)
  np.testing.assert_array_equal(ours(y), plain(y))
  grad, plain_grad = jax.grad(loss(ours))(y), jax.grad(loss(plain))(y)
  assert grad.shape == y.shape
  np.testing.assert_allclose(grad, plain_grad, rtol=1e-6, atol=1e-6)


def test_repeat_rejects_an_axis_longer_than_one():
  with pytest.raises(ValueError, match="must have size 1"):
    repeat(jnp.zeros((2, 3)), 4, 0)


def test_repeat_sums_bfloat16_cotangents_in_float32():
  # 512 ones: a chain of bfloat16 adds stalls at 256 (256 + 1 rounds back to 256 with 8
  # significant bits); summed in float32, 512, which bfloat16 holds exactly.
  _, vjp = jax.vjp(lambda y: repeat(y, 512, 0), jnp.zeros((1, 3), jnp.bfloat16))
  (grad,) = jax.jit(vjp)(jnp.ones((512, 3), jnp.bfloat16))
  assert grad.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.float32(grad), np.full((1, 3), 512.0, np.float32))
