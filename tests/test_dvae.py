"""Tests of vonet_jax.models.dvae: parameter counts, pixel-shuffle order, tokens, shapes."""
import functools

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


@pytest.fixture(scope="module")
def tiny():
  """A tiny dVAE (vocabulary 16, hidden 8), 16x16 images, parameters."""
  model = DVAE(vocab_size=16, hidden=8)
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.key(1), images, 1.0, jax.random.key(2))
  return model, images, params


def test_forward_shapes_loss_and_tokens(tiny):
  model, images, params = tiny
  rng, tau = jax.random.key(4), 0.7
  out = jax.jit(model.apply)(params, images, tau, rng)
  assert out["recon"].shape == (2, 16, 16, 3)
  assert out["log_probs"].shape == (2, 4, 4, 16)
  assert out["tokens"].shape == (2, 16) and out["tokens"].dtype == jnp.int32
  assert out["mse"].shape == (2,)
  np.testing.assert_allclose(out["mse"], np.sum((out["recon"] - images) ** 2, axis=(1, 2, 3)),
                             rtol=1e-5)
  np.testing.assert_allclose(jnp.exp(out["log_probs"]).sum(-1), 1.0, rtol=1e-5)
  # Tokens are the argmax of the same relaxed sample that is decoded.
  log_probs = out["log_probs"]
  relaxed = jax.nn.softmax((log_probs + jax.random.gumbel(rng, log_probs.shape)) / tau, axis=-1)
  np.testing.assert_array_equal(out["tokens"], jnp.argmax(relaxed, -1).reshape(2, -1))
  decode = jax.jit(functools.partial(model.apply, method=DVAE.decode))
  np.testing.assert_allclose(out["recon"], decode(params, relaxed), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.apply(params, images, method=DVAE.encode), log_probs,
                             rtol=1e-5, atol=1e-6)
  # decode_tokens decodes the hard one-hot of the tokens.
  pictures = jax.jit(functools.partial(model.apply, method=DVAE.decode_tokens))(
      params, out["tokens"])
  assert pictures.shape == (2, 16, 16, 3)
  one_hot = jax.nn.one_hot(out["tokens"].reshape(2, 4, 4), 16)
  np.testing.assert_allclose(pictures, decode(params, one_hot), rtol=1e-5, atol=1e-6)


def test_relu_before_log_softmax_flag_on_non_square_images(tiny):
  with_relu, _, params = tiny
  without = with_relu.clone(relu_before_log_softmax=False)
  images = jax.random.uniform(jax.random.key(0), (1, 8, 12, 3))
  lp_relu, state = with_relu.apply(params, images, method=DVAE.encode,
                                   capture_intermediates=lambda m, _: m.name == "vocab")
  logits = state["intermediates"]["encoder"]["vocab"]["__call__"][0]  # [1, 2, 3, 16]
  assert float(logits.min()) < 0  # so that the flag matters
  lp_plain = without.apply(params, images, method=DVAE.encode)
  np.testing.assert_allclose(lp_relu, jax.nn.log_softmax(jax.nn.relu(logits)), rtol=1e-5)
  np.testing.assert_allclose(lp_plain, jax.nn.log_softmax(logits), rtol=1e-5)


def test_reconstruction_gradient_reaches_the_encoder(tiny):
  model, images, params = tiny
  loss = lambda p: model.apply(p, images, 1.0, jax.random.key(5))["mse"].sum()
  grads = jax.jit(jax.grad(loss))(params)
  assert float(jnp.abs(grads["params"]["encoder"]["vocab"]["kernel"]).sum()) > 0


def test_bad_image_size_is_rejected():
  model = DVAE(vocab_size=16, hidden=8)
  with pytest.raises(ValueError, match="divisible by 4"):
    model.init(jax.random.key(1), jnp.zeros((1, 10, 8, 3)), 1.0, jax.random.key(2))


def test_gumbel_softmax_tie_is_exact():
  # gumbel_softmax ties its noise to log_probs with an optimization barrier (a memory fix): the
  # sample, the tokens and the gradient equal those of the untied formula bit for bit.
  log_probs = jax.nn.log_softmax(jax.random.normal(jax.random.key(0), (2, 4, 4, 16)))
  rng, tau = jax.random.key(3), 0.7

  def untied(lp):
    relaxed = jax.nn.softmax((lp + jax.random.gumbel(rng, lp.shape, jnp.float32)) / tau, -1)
    return relaxed, jnp.argmax(relaxed, -1).astype(jnp.int32)

  relaxed, tokens = jax.jit(dvae.gumbel_softmax)(log_probs, tau, rng)
  ref_relaxed, ref_tokens = jax.jit(untied)(log_probs)
  np.testing.assert_array_equal(relaxed, ref_relaxed)
  np.testing.assert_array_equal(tokens, ref_tokens)
  w = jax.random.normal(jax.random.key(4), log_probs.shape)
  grad = jax.jit(jax.grad(lambda lp: jnp.sum(dvae.gumbel_softmax(lp, tau, rng)[0] * w)))
  ref_grad = jax.jit(jax.grad(lambda lp: jnp.sum(untied(lp)[0] * w)))
  np.testing.assert_array_equal(grad(log_probs), ref_grad(log_probs))


def test_gumbel_softmax_of_logits_equals_that_of_their_log_softmax():
  # DVAE.__call__ samples from the encoder's logits, skipping their log-softmax: softmax is
  # invariant to the constant per token, so the sample, tokens and gradient are the same.
  logits = 3.0 * jax.random.normal(jax.random.key(0), (2, 4, 4, 16)) + 5.0
  rng, tau = jax.random.key(3), 0.7
  w = jax.random.normal(jax.random.key(4), logits.shape)

  def sample_and_grad(normalize):
    def loss(x):
      relaxed, tokens = dvae.gumbel_softmax(jax.nn.log_softmax(x) if normalize else x, tau, rng)
      return jnp.sum(relaxed * w), (relaxed, tokens)
    return jax.jit(jax.grad(loss, has_aux=True))(logits)

  (grad, (relaxed, tokens)), (ref_grad, (ref_relaxed, ref_tokens)) = (
      sample_and_grad(False), sample_and_grad(True))
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_allclose(relaxed, ref_relaxed, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)


def test_first_argmax_equals_jnp_argmax_with_ties_and_nans():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 5, 33)).astype(np.float32)
  x[0, 0, [3, 7]] = 9.0  # a tie at the maximum: the first index
  x[0, 1, [2, 30]] = np.nan  # NaNs: the first NaN
  x[0, 2, 5] = np.inf
  x[0, 3] = -np.inf  # all -inf: index 0
  x[0, 4] = 0.0
  x[0, 4, 1] = -0.0  # -0 and +0 are equal maxima
  x[1] = np.round(x[1])  # many ties
  expected = np.asarray(jnp.argmax(jnp.asarray(x), axis=-1))
  got = np.asarray(jax.jit(dvae.first_argmax)(jnp.asarray(x)))
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, expected)


def test_training_pass_equals_decoding_the_softmax_sample(tiny):
  # DVAE.__call__ decodes the sample as weights / row sums (gumbel_softmax_parts, the decoder's
  # first layer dividing after its matmul): the same reconstruction, tokens and gradients as
  # decoding gumbel_softmax's sample.
  model, images, params = tiny
  rng, tau = jax.random.key(4), 0.7
  w = jax.random.normal(jax.random.key(5), images.shape)

  def plain(p):
    logits = model.apply(p, images, method=lambda m, x: m.encoder(x, normalize=False))
    relaxed, tokens = dvae.gumbel_softmax(logits, tau, rng)
    return model.apply(p, relaxed, method=DVAE.decode), tokens.reshape(2, -1)

  def fast(p):
    out = model.apply(p, images, tau, rng)
    return out["recon"], out["tokens"]

  (recon, tokens), (ref_recon, ref_tokens) = jax.jit(fast)(params), jax.jit(plain)(params)
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_allclose(recon, ref_recon, rtol=1e-5, atol=1e-6)
  grads = [jax.jit(jax.grad(lambda p, f=f: jnp.sum(f(p)[0] * w)))(params) for f in (fast, plain)]
  jax.tree_util.tree_map(lambda g, ref: np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-6),
                         *grads)
