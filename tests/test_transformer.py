"""Tests of vonet_jax.models.transformer: parameter counts, attention implementations, KV cache."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models import transformer
from vonet_jax.models.transformer import MultiHeadAttention, SlotTransformer


def count_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def abstract_init(model, *shapes):
  """Parameter shapes of `model` without computing anything."""
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  return jax.eval_shape(model.init, jax.random.key(0), *args)["params"]


def test_mask_transformer_param_count():
  # SPEC.md section 7: 3 layers, 3 heads, head size 512, MLP 1024, model size 512.
  model = SlotTransformer(num_layers=3, num_heads=3, head_dim=512, mlp_dim=1024)
  assert count_params(abstract_init(model, (2, 11, 512))) == 12_598_272


def test_slot_transformer_block_param_count():
  model = SlotTransformer(num_layers=3, num_heads=3, head_dim=128, mlp_dim=256)
  params = abstract_init(model, (2, 11, 128))
  assert count_params(params["block_0"]) == 263_424
  assert count_params(params) == 3 * 263_424
  attention = params["block_0"]["attention"]
  assert set(attention) == {"q_proj", "k_proj", "v_proj", "o_proj", "query_bias"}
  assert all(set(attention[p]) == {"kernel"} for p in ("q_proj", "k_proj", "v_proj", "o_proj"))


def test_query_bias_zero_init_and_layer_norm_eps():
  model = SlotTransformer(num_layers=1, num_heads=2, head_dim=4, mlp_dim=8)
  x = jax.random.normal(jax.random.key(0), (2, 3, 6))
  params = model.init(jax.random.key(1), x)["params"]
  np.testing.assert_array_equal(params["block_0"]["attention"]["query_bias"], np.zeros(8))
  assert transformer.layer_norm().epsilon == 1e-5


def _attention_inputs():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 7, 12))  # [B, T, d]
  memory = jax.random.normal(keys[1], (2, 5, 10))  # [B, S, d_mem]
  return x, memory, keys[2]


@pytest.mark.parametrize("causal,cross", [(False, False), (True, False), (False, True)])
def test_xla_equals_einsum(causal, cross):
  x, memory, key = _attention_inputs()
  memory = memory if cross else None
  make = functools.partial(MultiHeadAttention, num_heads=3, head_dim=4, out_dim=12, q_bias=True)
  params = make(impl="einsum").init(key, x, memory)
  # A non-zero query bias, so that it is exercised.
  params = jax.tree_util.tree_map(lambda p: p + 0.1, params)
  out_xla = make(impl="xla").apply(params, x, memory, causal=causal)
  out_einsum = make(impl="einsum").apply(params, x, memory, causal=causal)
  assert out_xla.shape == (2, 7, 12)
  np.testing.assert_allclose(out_xla, out_einsum, rtol=1e-5, atol=1e-5)


def test_einsum_attention_matches_reference():
  keys = jax.random.split(jax.random.key(3), 3)
  q = jax.random.normal(keys[0], (1, 4, 2, 3))
  k = jax.random.normal(keys[1], (1, 5, 2, 3))
  v = jax.random.normal(keys[2], (1, 5, 2, 3))
  out = transformer.einsum_attention(q, k, v)
  for h in range(2):
    logits = np.asarray(q[0, :, h]) @ np.asarray(k[0, :, h]).T / np.sqrt(3.0)  # [T, S]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(out[0, :, h], probs @ np.asarray(v[0, :, h]), rtol=1e-5, atol=1e-6)


def test_causal_attention_ignores_the_future():
  x, _, key = _attention_inputs()
  model = MultiHeadAttention(num_heads=3, head_dim=4, out_dim=12, q_bias=False)
  params = model.init(key, x)
  changed = x.at[:, 4].add(1.0)
  out, out_changed = (model.apply(params, y, causal=True) for y in (x, changed))
  np.testing.assert_allclose(out[:, :4], out_changed[:, :4], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out[:, 4:], out_changed[:, 4:])


@pytest.mark.parametrize("impl", ["xla", "einsum"])
def test_decode_step_matches_full_causal_attention(impl):
  x, _, key = _attention_inputs()
  model = MultiHeadAttention(num_heads=3, head_dim=4, out_dim=12, impl=impl)
  params = model.init(key, x)
  full = model.apply(params, x, causal=True)  # [B, T, d]
  cache = model.init_cache(2, 7)
  assert cache["k"].shape == (2, 7, 3, 4)

  @jax.jit
  def step(cache, x_t, index):
    return model.apply(params, x_t, cache, index, method=MultiHeadAttention.decode_step)

  outs = []
  for t in range(7):
    y, cache = step(cache, x[:, t:t + 1], jnp.array(t))
    outs.append(y)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, rtol=1e-5, atol=1e-5)


def test_dropout_falls_back_to_einsum():
  x, _, key = _attention_inputs()
  make = functools.partial(MultiHeadAttention, num_heads=3, head_dim=4, out_dim=12,
                           dropout_rate=0.5)
  params = make(impl="einsum").init(key, x)
  rngs = {"dropout": jax.random.key(7)}
  train = [make(impl=impl).apply(params, x, causal=True, deterministic=False, rngs=rngs)
           for impl in ("xla", "einsum")]
  np.testing.assert_allclose(train[0], train[1], rtol=1e-6)
  assert not np.allclose(train[0], make(impl="xla").apply(params, x, causal=True))


def test_unknown_impl_is_rejected():
  x, _, key = _attention_inputs()
  with pytest.raises(ValueError, match="impl"):
    MultiHeadAttention(num_heads=1, head_dim=4, out_dim=12, impl="flash").init(key, x)


def test_slot_transformer_permutation_equivariant_and_impls_agree():
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  model = SlotTransformer(num_layers=2, num_heads=2, head_dim=8, mlp_dim=32)
  params = model.init(jax.random.key(1), x)
  out = model.apply(params, x)
  assert out.shape == x.shape
  perm = np.array([3, 0, 4, 1, 2])
  np.testing.assert_allclose(model.apply(params, x[:, perm]), out[:, perm], rtol=1e-5, atol=1e-5)
  einsum = SlotTransformer(num_layers=2, num_heads=2, head_dim=8, mlp_dim=32, impl="einsum")
  np.testing.assert_allclose(einsum.apply(params, x), out, rtol=1e-5, atol=1e-5)


def test_remat_same_values_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  plain = SlotTransformer(num_layers=2, num_heads=2, head_dim=8, mlp_dim=32)
  remat = SlotTransformer(num_layers=2, num_heads=2, head_dim=8, mlp_dim=32, remat=True)
  params = plain.init(jax.random.key(1), x)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      remat.init(jax.random.key(1), x))
  loss = lambda model: jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2)))(params)
  jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4),
                         loss(plain), loss(remat))


def test_bfloat16_compute_keeps_float32_params():
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  model = SlotTransformer(num_layers=1, num_heads=2, head_dim=8, mlp_dim=32, dtype=jnp.bfloat16)
  params = model.init(jax.random.key(1), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  out = model.apply(params, x)
  reference = model.clone(dtype=jnp.float32).apply(params, x)
  np.testing.assert_allclose(out.astype(jnp.float32), reference, rtol=0.05, atol=0.05)


def test_xavier_uniform_bounds():
  kernel = transformer.xavier_uniform(0.5)(jax.random.key(0), (30, 50))
  bound = 0.5 * np.sqrt(6.0 / 80)
  assert float(jnp.abs(kernel).max()) <= bound
  assert float(jnp.abs(kernel).max()) > 0.9 * bound



@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_dropout_attention_matches_autodiff(dtype, causal):
  # dropout_attention (softmax, ProbabilityDropout and the value matmul under one custom VJP that
  # saves only the softmax output) equals einsum_attention with nn.Dropout: the same output bit
  # for bit, the same gradients to rounding.
  import flax.linen as nn
  b, t, h, dh = 2, 6, 2, 4
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(key, (b, t, h, dh)).astype(dtype) for key in keys[:3])
  w = jax.random.normal(keys[3], (b, t, h, dh))
  mask = transformer.causal_mask(t) if causal else None
  rngs = {"dropout": jax.random.key(7)}

  def output(fused, q, k, v):
    if fused:  # the fused custom VJP
      module = transformer.ProbabilityDropout(0.3)
      fn = lambda mdl: transformer.dropout_attention(q, k, v, mask, mdl)
    else:  # the reference: autodiff through softmax, nn.Dropout and the value matmul
      module = nn.Dropout(0.3)
      fn = lambda mdl: transformer.einsum_attention(
          q, k, v, mask, functools.partial(mdl, deterministic=False))
    return nn.apply(fn, module)({}, rngs=rngs)

  def out_and_grads(fused):
    loss = lambda *qkv: jnp.sum(output(fused, *qkv).astype(jnp.float32) * w)
    return (jax.jit(functools.partial(output, fused))(q, k, v),
            jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v))

  (out, grads), (ref, ref_grads) = out_and_grads(True), out_and_grads(False)
  np.testing.assert_array_equal(out, ref)
  assert not np.allclose(out, transformer.einsum_attention(q, k, v, mask))  # dropout was active
  tol = dict(rtol=1e-5, atol=1e-6) if dtype == jnp.float32 else dict(rtol=1e-2, atol=1e-2)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), **tol)


@pytest.mark.parametrize("recompute", [False, True], ids=["saved", "recomputed"])
@pytest.mark.parametrize("num_blocks", [2, 4, 8])
def test_causal_dropout_attention_matches_the_plain_path(num_blocks, recompute):
  # The blocked causal attention skips the fully masked keys and draws the dropout mask of each
  # block as a box of the plain path's draw: the same output and gradients as dropout_attention
  # with the full causal mask (to float32 rounding: only the softmax's sum order differs).
  import flax.linen as nn
  b, t, h, dh = 2, 16, 2, 4
  keys = jax.random.split(jax.random.key(1), 4)
  q, k, v = (jax.random.normal(key, (b, t, h, dh)) for key in keys[:3])
  w = jax.random.normal(keys[3], (b, t, h, dh))
  rngs = {"dropout": jax.random.key(3)}

  def output(blocks, q, k, v):
    if blocks:
      fn = lambda mdl: transformer.causal_dropout_attention(q, k, v, mdl, num_blocks, recompute)
    else:
      fn = lambda mdl: transformer.dropout_attention(q, k, v, transformer.causal_mask(t), mdl)
    return nn.apply(fn, transformer.ProbabilityDropout(0.3))({}, rngs=rngs)

  def out_and_grads(blocks):
    loss = lambda *qkv: jnp.sum(output(blocks, *qkv) * w)
    return (jax.jit(functools.partial(output, blocks))(q, k, v),
            jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v))

  (out, grads), (ref, ref_grads) = out_and_grads(True), out_and_grads(False)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
  assert not np.allclose(out, transformer.einsum_attention(q, k, v, transformer.causal_mask(t)))
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="does not divide"):
    output(True, q[:, :15], k[:, :15], v[:, :15])


def test_multi_head_attention_causal_blocks_same_training_output():
  x, _, key = _attention_inputs()
  make = functools.partial(MultiHeadAttention, num_heads=3, head_dim=4, out_dim=12,
                           dropout_rate=0.5, impl="einsum")
  params = make().init(key, x)
  rngs = {"dropout": jax.random.key(7)}
  train = [make(causal_blocks=n).apply(params, x, causal=True, deterministic=False, rngs=rngs)
           for n in (1, x.shape[1])]
  np.testing.assert_allclose(train[0], train[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("broadcast_dims", [(), (1,)])
def test_dropout_is_flax_dropout(broadcast_dims):
  x = jax.random.normal(jax.random.key(0), (4, 16, 8))
  for key in (jax.random.key(1), jax.random.key(2, impl="rbg")):
    ours, theirs = (m(0.3, broadcast_dims=broadcast_dims).apply(
        {}, x, deterministic=False, rngs={"dropout": key})
                    for m in (transformer.Dropout, nn.Dropout))
    np.testing.assert_array_equal(ours, theirs)
