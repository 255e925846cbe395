"""`Dense` and `PointwiseConv` are nn.Dense and a 1x1 nn.Conv: same parameters, same function."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models.layers import Dense, PointwiseConv


def value_and_grads(module, variables, x):
  loss = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
  return module.apply(variables, x), jax.grad(loss, argnums=(0, 1))(variables, x)


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("ours,plain", [
    (Dense(7), nn.Dense(7)),
    (Dense(7, use_bias=False, dtype=jnp.bfloat16), nn.Dense(7, use_bias=False,
                                                            dtype=jnp.bfloat16)),
    (PointwiseConv(7), nn.Conv(7, (1, 1))),
    (PointwiseConv(7, use_bias=False, kernel_init=nn.initializers.he_uniform()),
     nn.Conv(7, (1, 1), use_bias=False, kernel_init=nn.initializers.he_uniform())),
])
def test_same_parameters_and_function_as_flax(shape, ours, plain):
  if isinstance(plain, nn.Conv) and len(shape) < 4:
    shape = (2,) + shape[:-1] + (1, shape[-1])  # a conv needs [B, H, W, C]
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  variables = ours.init(jax.random.key(1), x)
  plain_variables = plain.init(jax.random.key(1), x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, plain_variables)
  out, grads = value_and_grads(ours, variables, x)
  plain_out, plain_grads = value_and_grads(plain, variables, x)
  assert out.shape == plain_out.shape and out.dtype == plain_out.dtype
  tolerance = 1e-2 if out.dtype == jnp.bfloat16 else 1e-5
  np.testing.assert_allclose(np.float32(out), np.float32(plain_out), rtol=tolerance,
                             atol=tolerance)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tolerance,
                                              atol=tolerance), grads, plain_grads)
