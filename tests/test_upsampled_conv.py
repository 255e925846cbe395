"""The up blocks' convolution of concat([upsample2(x), skip]) on x's own grid equals the plain one."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models.conv3x3 import conv3x3
from vonet_jax.models.upsampled_conv import UpsampledWithSkip, conv3x3_of_upsampled, upsample2


def test_upsample2_repeats_each_pixel_in_a_2x2_block():
  x = jnp.arange(6.0).reshape(1, 2, 3, 1)
  expected = np.array([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
                       [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]], np.float32)
  np.testing.assert_array_equal(upsample2(x)[0, :, :, 0], expected)


def _close(a, b, tol=2e-5):
  scale = float(np.max(np.abs(b)))
  np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("h,w,c_low,c_skip,c_out", [(4, 4, 6, 6, 5), (3, 5, 4, 7, 8), (1, 1, 3, 2, 4)])
def test_equals_the_plain_convolution_in_value_and_gradients(h, w, c_low, c_skip, c_out):
  rng = np.random.default_rng(0)
  low = jnp.asarray(rng.normal(size=(2, h, w, c_low)), jnp.float32)
  skip = jnp.asarray(rng.normal(size=(2, 2 * h, 2 * w, c_skip)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, c_low + c_skip, c_out)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(2, 2 * h, 2 * w, c_out)), jnp.float32)
  # The plain path: nn.Conv's function (zero padding 1, no bias) on the concatenated maps.
  plain = lambda low, skip, k: nn.Conv(c_out, (3, 3), padding=((1, 1), (1, 1)), use_bias=False
                                       ).apply({"params": {"kernel": k}},
                                               jnp.concatenate([upsample2(low), skip], -1))
  ours = lambda low, skip, k: UpsampledWithSkip(low, skip).conv3x3(k)
  assert UpsampledWithSkip(low, skip).shape == (2, 2 * h, 2 * w, c_low + c_skip)
  out = jax.jit(ours)(low, skip, kernel)
  assert out.shape == (2, 2 * h, 2 * w, c_out)
  _close(out, plain(low, skip, kernel))
  grads = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a)) * weights), (0, 1, 2)))
  for ours_grad, plain_grad in zip(grads(ours)(low, skip, kernel),
                                   grads(plain)(low, skip, kernel)):
    _close(ours_grad, plain_grad)


def test_the_upsampled_term_alone_equals_conv3x3_of_the_upsampled_map():
  # The skip-free term, at MOVi-A's last up block's channels (32 -> 32) on a small grid.
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 32)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 32, 32)) * 0.1, jnp.float32)
  _close(jax.jit(conv3x3_of_upsampled)(x, kernel), conv3x3(upsample2(x), kernel))
