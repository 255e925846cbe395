"""Tests of vonet_jax.models.decoder: parameter counts, causality, greedy decoding, loss."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vonet_jax.models import decoder as decoder_lib
from vonet_jax.models.decoder import TransformerDecoder, token_cross_entropy


def count_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_full_size_param_counts():
  # SPEC.md section 7 and the full config: V 4096, N 1024, d 192, 4 heads, 8 layers, FFN 768.
  model = TransformerDecoder(vocab_size=4096, num_tokens=1024, d_model=192, num_heads=4,
                             num_layers=8, ffn_dim=768, dropout=0.1, memory_hidden=256)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((2, 11, 128), jnp.float32),
                          jax.ShapeDtypeStruct((2, 1024), jnp.int32))["params"]
  counts = {name: count_params(tree) for name, tree in params.items()}
  assert counts == {
      "transformer": 4_735_872,
      "token_embedding": 786_432,
      "logits": 786_816,
      "slot_memory": 82_368,
      "bos": 192,
      "position_embedding": 196_608,
      "input_norm": 384,
  }
  assert set(params["transformer"]) == {f"block_{i}" for i in range(8)} | {"final_norm"}


@pytest.fixture(scope="module")
def tiny():
  """A tiny decoder, slots, tokens and parameters (attention impl and remat leave the parameter
  tree unchanged: tests vary them with `model.clone`)."""
  model = TransformerDecoder(vocab_size=11, num_tokens=9, d_model=16, num_heads=2, num_layers=2,
                             ffn_dim=32, dropout=0.1, memory_hidden=8)
  z = jax.random.normal(jax.random.key(0), (2, 3, 5))  # [B, K, D]
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 11)  # [B, N]
  params = jax.jit(model.init)(jax.random.key(2), z, tokens)
  return model, z, tokens, params


def test_teacher_forcing_shape_and_causality(tiny):
  model, z, tokens, params = tiny
  apply = jax.jit(functools.partial(model.apply, params))
  logits = apply(z, tokens)
  assert logits.shape == (2, 9, 11)
  for j in (0, 4, 8):
    changed = tokens.at[:, j].set((tokens[:, j] + 1) % 11)
    other = apply(z, changed)
    # Position n predicts token n from tokens < n: token j affects positions > j only.
    np.testing.assert_allclose(other[:, :j + 1], logits[:, :j + 1], rtol=1e-6, atol=1e-6)
    if j < 8:
      assert not np.allclose(other[:, j + 1:], logits[:, j + 1:])
  # The slots condition every position.
  other = apply(z.at[:, 1].add(1.0), tokens)
  assert not np.any(np.all(np.isclose(other, logits), axis=-1))


def _teacher_forced_argmax(model, params, z):
  apply = jax.jit(functools.partial(model.apply, params))
  tokens = jnp.zeros((z.shape[0], model.num_tokens), jnp.int32)
  for n in range(model.num_tokens):
    tokens = tokens.at[:, n].set(jnp.argmax(apply(z, tokens)[:, n], axis=-1))
  return tokens


@pytest.mark.parametrize("overrides", [dict(), dict(impl="einsum", remat=True)])
def test_greedy_decode_equals_repeated_teacher_forcing(tiny, overrides):
  model, z, _, params = tiny
  model = model.clone(**overrides)
  greedy = jax.jit(lambda p, z: model.apply(p, z, method=TransformerDecoder.greedy_decode))
  tokens = greedy(params, z)
  assert tokens.shape == (2, 9) and tokens.dtype == jnp.int32
  np.testing.assert_array_equal(tokens, _teacher_forced_argmax(model, params, z))


def test_greedy_decode_is_one_loop(tiny):
  model, z, _, params = tiny
  jaxpr = jax.make_jaxpr(
      lambda p, z: model.apply(p, z, method=TransformerDecoder.greedy_decode))(params, z)
  assert [e.primitive.name for e in jaxpr.eqns].count("while") == 1


def test_dropout_only_when_not_deterministic(tiny):
  model, z, tokens, params = tiny
  remat = model.clone(remat=True)

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def apply(model, deterministic, rng):
    return model.apply(params, z, tokens, deterministic, rngs={"dropout": rng})

  rng = jax.random.key(5)
  eval_logits = apply(model, True, rng)
  train_logits = apply(model, False, rng)
  assert not np.allclose(train_logits, eval_logits)
  assert not np.allclose(train_logits, apply(model, False, jax.random.key(6)))
  np.testing.assert_allclose(apply(remat, False, rng), train_logits, rtol=1e-5, atol=1e-5)


def test_recompute_blocks_same_function_and_gradients(tiny, monkeypatch):
  # recompute_blocks runs each block under a custom VJP that recomputes it in the backward pass:
  # the same values and gradients as autodiff through the same blocks with the same keys.
  model, z, tokens, params = tiny
  model = model.clone(recompute_blocks=True)
  w = jax.random.normal(jax.random.key(7), (2, 9, 11))
  rngs = {"dropout": jax.random.key(8)}

  def loss(p):
    return jnp.sum(model.apply(p, z, tokens, False, rngs=rngs) * w)

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  monkeypatch.setattr(decoder_lib, "_recomputed_block", lambda f, p, x, m, k: f(p, x, m, k))
  ref_value, ref_grads = jax.jit(jax.value_and_grad(loss))(params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
  # Evaluation (no dropout) is the default path's.
  np.testing.assert_array_equal(jax.jit(model.apply)(params, z, tokens),
                                jax.jit(model.clone(recompute_blocks=False).apply)(params, z, tokens))


@pytest.mark.parametrize("token_dropout", [0.0, 1.0 - 1e-7])
def test_token_dropout_zeroes_previous_token_embeddings(tiny, token_dropout):
  # Word dropout zeroes the embeddings of the tokens before each position, BOS and position
  # embeddings kept, in training only. With token 0's embedding row set to zero, dropping every
  # token (probability 1 - 1e-7) is teacher forcing on all-zero tokens; 0 changes nothing.
  model, z, tokens, params = tiny
  model = model.clone(dropout=0.0, token_dropout=token_dropout)
  table = params["params"]["token_embedding"]["embedding"]
  params = {"params": {**params["params"], "token_embedding": {"embedding": table.at[0].set(0.0)}}}
  apply = jax.jit(model.apply, static_argnums=3)
  rngs = {"dropout": jax.random.key(9)}
  train_logits = apply(params, z, tokens, False, rngs=rngs)
  seen = jnp.zeros_like(tokens) if token_dropout else tokens
  np.testing.assert_allclose(train_logits, apply(params, z, seen, True), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(apply(params, z, tokens, True), jax.jit(model.clone(
      token_dropout=0.0).apply)(params, z, tokens), rtol=1e-6, atol=1e-6)


def test_cross_entropy_equals_the_loss_of_the_logits(tiny):
  # decoder.cross_entropy (frame_cross_entropy: one frame's logits at a time, recomputed in the
  # backward pass) is the loss of decoder(...)'s logits, with the same gradients.
  model, z, tokens, params = tiny
  rngs = {"dropout": jax.random.key(3)}
  w = jnp.asarray([0.7, -1.3])  # a weight per frame

  def loss(p, via_logits):
    if via_logits:
      ce = token_cross_entropy(model.apply(p, z, tokens, False, rngs=rngs), tokens)
    else:
      ce = model.apply(p, z, tokens, False, rngs=rngs, method=model.cross_entropy)
    return jnp.sum(ce * w), ce

  (value, ce), grads = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(
      params, False)
  (ref_value, ref_ce), ref_grads = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                           static_argnums=1)(params, True)
  assert ce.shape == (2,)
  np.testing.assert_allclose(ce, ref_ce, rtol=1e-6)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_token_cross_entropy():
  logits = jax.random.normal(jax.random.key(0), (2, 5, 7))
  tokens = jax.random.randint(jax.random.key(1), (2, 5), 0, 7)
  reference = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                  np.asarray(tokens)[..., None], -1)[..., 0].sum(-1)
  np.testing.assert_allclose(token_cross_entropy(logits, tokens), reference, rtol=1e-5)
  np.testing.assert_allclose(
      token_cross_entropy(logits.astype(jnp.bfloat16), tokens),
      optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.bfloat16).astype(jnp.float32), tokens).sum(-1), rtol=1e-6)


def test_bad_shapes_are_rejected(tiny):
  model, z, tokens, params = tiny
  with pytest.raises(ValueError, match="position embedding"):
    model.apply(params, z, jnp.zeros((2, 10), jnp.int32))
  with pytest.raises(ValueError, match=r"\[B, K, D\]"):
    model.apply(params, z[0], tokens)



@pytest.mark.parametrize("remat", [False, True])
def test_probability_dropout_matches_flax_dropout_and_autodiff(tiny, monkeypatch, remat):
  # The attention-probability dropout (memory fixes: ProbabilityDropout, key tied to its input
  # by tie_key_to; softmax, dropout and value matmul under one custom VJP, dropout_attention)
  # draws the same bits as nn.Dropout: the logits, the loss and the parameter gradients equal
  # those of plain nn.Dropout with the untied key and autodiff to float32 rounding. (The value
  # matmul runs heads-first, a layout whose sums XLA:CPU may order differently: the logits were
  # equal bit for bit on an AVX-512 CPU, 6e-7 apart on an AVX2 one. A different dropout mask
  # would move them by about 1e-1.)
  from vonet_jax.models import transformer
  model, z, tokens, params = tiny
  model = model.clone(remat=remat)

  def loss_and_grad():
    def loss(p):
      logits = model.apply(p, z, tokens, False, rngs={"dropout": jax.random.key(5)})
      return token_cross_entropy(logits, tokens).sum(), logits
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  (new_loss, new_logits), new_grads = loss_and_grad()
  # Reference: softmax, nn.Dropout and the value matmul differentiated by autodiff (without the
  # fused custom VJP of `dropout_attention`).
  monkeypatch.setattr(transformer, "ProbabilityDropout", nn.Dropout)
  monkeypatch.setattr(transformer, "dropout_attention", lambda q, k, v, mask, dropout: (
      transformer.einsum_attention(q, k, v, mask, functools.partial(dropout, deterministic=False))))
  (loss, logits), grads = loss_and_grad()
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  close(new_logits, logits)
  close(new_loss, loss)
  jax.tree_util.tree_map(close, new_grads, grads)
  assert not np.allclose(new_logits, model.apply(params, z, tokens, True))  # dropout was active


def test_probability_dropout_key_draws_the_mask_of_flax_dropout():
  from vonet_jax.models.lean_backward import tie_key_to
  from vonet_jax.models.transformer import ProbabilityDropout
  x = jax.nn.softmax(jax.random.normal(jax.random.key(0), (3, 7, 5)))
  rngs = {"dropout": jax.random.key(1)}
  for rate in (0.1, 0.5):
    key = ProbabilityDropout(rate).apply({}, method=ProbabilityDropout.key, rngs=rngs)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    np.testing.assert_array_equal(jnp.where(keep, x / (1.0 - rate), 0.0),
                                  nn.Dropout(rate).apply({}, x, False, rngs=rngs))
  # tie_key_to returns the same key (typed or raw) for finite input.
  key = jax.random.key(3)
  np.testing.assert_array_equal(jax.random.key_data(jax.jit(tie_key_to)(key, x)),
                                jax.random.key_data(key))
  raw = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(jax.jit(tie_key_to)(raw, x), raw)
