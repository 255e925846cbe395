"""Tests of vonet_jax.models.dvae: parameter counts, pixel-shuffle order, tokens, shapes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models import dvae
from vonet_jax.models.dvae import DVAE


def count_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_full_size_param_counts():
  # SPEC.md section 7: encoder 290,176, decoder 386,179 (hidden 64, vocab 4096, 128x128 frames).
  model = DVAE(vocab_size=4096, hidden=64)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32), 1.0,
                          jax.random.key(1))["params"]
  assert count_params(params["encoder"]) == 290_176
  assert count_params(params["decoder"]) == 386_179
  assert set(params) == {"encoder", "decoder"}


def test_pixel_shuffle_matches_pytorch_order():
  b, h, w, c, r = 2, 3, 4, 5, 2
  x = np.random.default_rng(0).normal(size=(b, h, w, c * r * r)).astype(np.float32)
  reference = np.zeros((b, h * r, w * r, c), np.float32)
  for ch in range(c):
    for i in range(r):
      for j in range(r):
        # Input channel c*r*r + i*r + j goes to output channel c at (h*r + i, w*r + j).
        reference[:, i::r, j::r, ch] = x[..., ch * r * r + i * r + j]
  np.testing.assert_array_equal(dvae.pixel_shuffle(jnp.asarray(x), r), reference)


def _tiny():
  model = DVAE(vocab_size=16, hidden=8)
  images = jax.random.uniform(jax.random.key(0), (2, 16, 12, 3))
  params = model.init(jax.random.key(1), images, 1.0, jax.random.key(2))
  return model, images, params


def test_shapes_and_loss():
  model, images, params = _tiny()
  out = model.apply(params, images, 0.5, jax.random.key(3))
  assert out["recon"].shape == (2, 16, 12, 3)
  assert out["log_probs"].shape == (2, 4, 3, 16)
  assert out["tokens"].shape == (2, 12) and out["tokens"].dtype == jnp.int32
  assert out["mse"].shape == (2,)
  np.testing.assert_allclose(out["mse"], np.sum((out["recon"] - images) ** 2, axis=(1, 2, 3)),
                             rtol=1e-5)
  np.testing.assert_allclose(jnp.exp(out["log_probs"]).sum(-1), 1.0, rtol=1e-5)


def test_tokens_are_argmax_of_the_relaxed_sample():
  model, images, params = _tiny()
  rng, tau = jax.random.key(4), 0.7
  out = model.apply(params, images, tau, rng)
  log_probs = model.apply(params, images, method=DVAE.encode)
  np.testing.assert_allclose(log_probs, out["log_probs"], rtol=1e-6)
  gumbel = jax.random.gumbel(rng, log_probs.shape)
  relaxed = jax.nn.softmax((log_probs + gumbel) / tau, axis=-1)
  np.testing.assert_array_equal(out["tokens"], jnp.argmax(relaxed, -1).reshape(2, -1))
  recon = model.apply(params, relaxed, method=DVAE.decode)
  np.testing.assert_allclose(out["recon"], recon, rtol=1e-5, atol=1e-6)


def test_decode_tokens_is_decoding_hard_one_hot():
  model = DVAE(vocab_size=16, hidden=8)
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  params = model.init(jax.random.key(1), images, 1.0, jax.random.key(2))
  tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, 16)
  pictures = model.apply(params, tokens, method=DVAE.decode_tokens)
  assert pictures.shape == (2, 16, 16, 3)
  one_hot = jax.nn.one_hot(tokens.reshape(2, 4, 4), 16)
  np.testing.assert_allclose(pictures, model.apply(params, one_hot, method=DVAE.decode),
                             rtol=1e-6)


def test_relu_before_log_softmax_flag():
  images = jax.random.uniform(jax.random.key(0), (1, 8, 8, 3))
  with_relu, without = DVAE(16, 8), DVAE(16, 8, relu_before_log_softmax=False)
  params = with_relu.init(jax.random.key(1), images, 1.0, jax.random.key(2))
  lp_relu, state = with_relu.apply(params, images, method=DVAE.encode,
                                   capture_intermediates=lambda m, _: m.name == "vocab")
  logits = state["intermediates"]["encoder"]["vocab"]["__call__"][0]  # [1, 2, 2, 16]
  assert float(logits.min()) < 0  # so that the flag matters
  lp_plain = without.apply(params, images, method=DVAE.encode)
  np.testing.assert_allclose(lp_relu, jax.nn.log_softmax(jax.nn.relu(logits)), rtol=1e-5)
  np.testing.assert_allclose(lp_plain, jax.nn.log_softmax(logits), rtol=1e-5)


def test_reconstruction_gradient_reaches_the_encoder():
  model, images, params = _tiny()
  grads = jax.grad(lambda p: model.apply(p, images, 1.0, jax.random.key(5))["mse"].sum())(params)
  assert float(jnp.abs(grads["params"]["encoder"]["vocab"]["kernel"]).sum()) > 0


def test_bad_image_size_is_rejected():
  model = DVAE(vocab_size=16, hidden=8)
  with pytest.raises(ValueError, match="divisible by 4"):
    model.init(jax.random.key(1), jnp.zeros((1, 10, 8, 3)), 1.0, jax.random.key(2))
