"""`conv3x3` is nn.Conv's zero-padded 3x3 convolution, with the same gradients both ways round."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models.conv3x3 import conv3x3


@pytest.mark.parametrize("c_in,c_out", [(12, 5), (5, 12), (6, 6)])
def test_equals_flax_conv_in_value_and_gradients(c_in, c_out):
  # c_in > c_out takes the kernel gradient computed from the cotangent's side.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 7, 9, c_in)), jnp.float32)
  plain = nn.Conv(c_out, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)
  params = plain.init(jax.random.key(1), x)
  weights = jnp.asarray(rng.normal(size=(3, 7, 9, c_out)), jnp.float32)
  ours = lambda p, x: conv3x3(x, p["params"]["kernel"])
  for f in (ours, plain.apply):
    assert f(params, x).shape == (3, 7, 9, c_out)
  np.testing.assert_allclose(ours(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)
  loss = lambda f: jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x)) * weights), (0, 1)))
  grads, plain_grads = loss(ours)(params, x), loss(plain.apply)(params, x)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), grads, plain_grads)
