"""Winograd's F(2x2, 3x3) forward pass equals XLA's zero-padded 3x3 convolution; gradients too."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny as tiny_configs
from vonet_jax import train_step
from vonet_jax.models import conv3x3, winograd
from vonet_jax.models.vonet import VONet, make_model


def plain(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def inputs(shape, c_out, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  return x, jnp.asarray(rng.normal(size=(3, 3, shape[-1], c_out)), jnp.float32)


def assert_close(a, b, rtol=2e-6):
  # Relative to the output's largest value: Winograd's sums round differently.
  scale = float(jnp.max(jnp.abs(b)))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=rtol * scale)


@pytest.fixture(autouse=True)
def every_channel_count(monkeypatch):
  # The tests' few channels and small batches too.
  monkeypatch.setattr(winograd, "MIN_INTENSITY", 0)
  monkeypatch.setattr(winograd, "CHUNK_BYTES", 0)


@pytest.mark.parametrize("shape,c_out", [((3, 8, 10, 5), 7), ((2, 16, 8, 12), 4),
                                         ((1, 12, 12, 3), 9)])
def test_forward_equals_the_plain_convolution(shape, c_out):
  x, kernel = inputs(shape, c_out)
  assert winograd.applies(x, c_out)
  out = jax.jit(winograd.forward)(x, kernel)
  assert out.shape == shape[:-1] + (c_out,)
  assert_close(out, plain(x, kernel))
  assert not np.array_equal(out, plain(x, kernel))  # computed another way, not XLA's conv


def test_chunks_of_the_batch_give_the_same_result(monkeypatch):
  # 6 maps of 8 x 8 x 4 floats (1 KiB each): chunks of 3, of 1, and all 6 at once.
  x, kernel = inputs((6, 8, 8, 4), 5)
  results = []
  for chunk_bytes, maps in ((3 * 1024, 3), (1, 1), (1 << 13, 6)):
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    assert winograd.chunk_size(x) == maps and winograd.applies(x, 5)
    results.append(jax.jit(winograd.forward)(x, kernel))
  for out in results:
    assert_close(out, plain(x, kernel))
  np.testing.assert_array_equal(results[0], results[1])  # the same sums, chunk by chunk


@pytest.mark.parametrize("shape", [(2, 7, 8, 3), (2, 8, 9, 3), (2, 6, 6, 3)])
def test_odd_or_small_maps_use_the_plain_convolution(shape):
  x, kernel = inputs(shape, 4)
  assert not winograd.applies(x, 4)
  np.testing.assert_array_equal(winograd.forward(x, kernel), plain(x, kernel))
  assert not winograd.applies(jnp.zeros((2, 8, 8, 3), jnp.bfloat16), 4)


def test_which_of_movi_as_convolutions_use_it(monkeypatch):
  monkeypatch.setattr(winograd, "MIN_INTENSITY", 24)
  monkeypatch.setattr(winograd, "CHUNK_BYTES", 2 << 20)
  maps = lambda n, size, c: jax.ShapeDtypeStruct((n, size, size, c), jnp.float32)
  # The collection: the backbone's 32 frames, F's 16, the U-Net's 176 maps.
  assert winograd.applies(maps(32, 64, 64), 64) and winograd.applies(maps(16, 64, 128), 32)
  for size, c, o in [(32, 64, 64), (16, 64, 128), (8, 128, 128), (8, 128, 64), (16, 64, 64)]:
    assert winograd.applies(maps(176, size, c), o)
  for size, c, o in [(64, 32, 64), (32, 64, 32), (64, 32, 32)]:  # down1, up3 and up4
    assert not winograd.applies(maps(176, size, c), o)
  # One frame's 11 maps (11 is prime: chunks of one map) or one map: small chunks.
  assert not winograd.applies(maps(11, 32, 64), 64) and not winograd.applies(maps(1, 8, 128), 128)
  assert winograd.applies(maps(1, 64, 128), 32)


@pytest.mark.parametrize("c_in,c_out", [(12, 5), (5, 12)])
def test_differentiated_it_is_xlas_convolution(c_in, c_out):
  # conv3x3.conv3x3 with winograd (both kernel-gradient forms) and winograd.conv3x3: Winograd's
  # forward pass when evaluated alone; under differentiation XLA's, values and gradients bit for
  # bit those of the plain path (training computes what it did before).
  x, kernel = inputs((2, 8, 10, c_in), c_out)
  weights = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 10, c_out)), jnp.float32)
  loss = lambda f, x, k: jnp.sum(jnp.sin(f(x, k)) * weights)
  for ours, theirs in [(lambda x, k: conv3x3.conv3x3(x, k, True), conv3x3.conv3x3),
                       (winograd.conv3x3, plain)]:
    alone, reference = jax.jit(ours)(x, kernel), jax.jit(theirs)(x, kernel)
    assert_close(alone, reference)
    assert not np.array_equal(alone, reference)
    value, grads = jax.jit(jax.value_and_grad(lambda x, k: loss(ours, x, k), (0, 1)))(x, kernel)
    plain_value, plain_grads = jax.jit(
        jax.value_and_grad(lambda x, k: loss(theirs, x, k), (0, 1)))(x, kernel)
    np.testing.assert_array_equal(value, plain_value)
    for a, b in zip(grads, plain_grads):
      np.testing.assert_array_equal(a, b)


def test_setting():
  assert winograd.enabled("winograd") and not winograd.enabled("direct")
  assert winograd.enabled("auto") == (jax.default_backend() == "cpu")


def test_model_with_and_without_winograd():
  # The same parameters (names, shapes, initial values) and, but for rounding, the same encoder.
  rng = np.random.default_rng(0)
  configs = {}
  for setting in ("winograd", "direct"):
    configs[setting] = tiny_configs.get_config()
    configs[setting].model.conv3x3 = setting
  variables = train_step.init_variables(configs["direct"], jax.random.key(0))
  winograd_variables = train_step.init_variables(configs["winograd"], jax.random.key(0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, winograd_variables, variables)
  config = configs["direct"]
  res, m = config.data.resolution, config.model
  frames = rng.integers(0, 256, (2, 2, res, res, 3), dtype=np.uint8)
  r_prev = rng.normal(size=(2, m.num_slots, m.slot_size)).astype(np.float32)
  first = np.array([[True, False], [False, False]])
  masks = {}
  for setting, config in configs.items():
    model = make_model(config, train=False)
    _, out = model.apply(variables, frames, r_prev, first, method=VONet.encode,
                         rngs={"noise": jax.random.key(1)})
    masks[setting] = out["masks"]
  np.testing.assert_allclose(masks["winograd"], masks["direct"], atol=1e-5)
