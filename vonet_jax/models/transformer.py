"""Multi-head attention and the pre-LN slot transformer (SPEC.md section 2).

`MultiHeadAttention` serves every transformer of the model: the mask, initial-slot and prior
transformers across the K slots (`SlotTransformer`, with the authors' learned query bias) and the
STEVE decoder (`vonet_jax.models.decoder`, causal self-attention with a KV cache plus
cross-attention to the slot memory).

Initialisation (PyTorch-style, as STEVE/SLATE): attention projections and linear output layers
use xavier_uniform (the output projections optionally with a gain, STEVE's (3 * layers)^-0.5),
the hidden layer of an MLP that feeds a ReLU uses kaiming_uniform (he_uniform), biases are zero.
LayerNorm eps is PyTorch's 1e-5.

Shapes: B batch, T query positions, S key/value positions, H heads, Dh per-head size, d model size.
"""
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vonet_jax.models import random_box
from vonet_jax.models.layers import Dense
from vonet_jax.models.lean_backward import (LayerNorm, pack_bits, relu, tie_bits_to, tie_floats_to,
                                            tie_key_to, unpack_bits)
from vonet_jax.models.materialize import materialize
from vonet_jax.models.random_box import bernoulli_box

LAYER_NORM_EPS = 1e-5  # PyTorch's default (Flax's is 1e-6).
ATTENTION_IMPLS = ("xla", "einsum")


def layer_norm(dtype: Any = jnp.float32, name: Optional[str] = None) -> LayerNorm:
  """LayerNorm with PyTorch's eps, learnable scale and bias (nn.LayerNorm's function and
  parameters; its backward pass keeps less, see lean_backward)."""
  return LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype, name=name)


def xavier_uniform(gain: float = 1.0):
  """PyTorch's xavier_uniform_ with a gain, for [fan_in, fan_out] (or HWIO) kernels."""
  return nn.initializers.variance_scaling(gain ** 2, "fan_avg", "uniform")


class Dropout(nn.Dropout):
  """`nn.Dropout`, the same mask bit for bit, drawn by `random_box.bernoulli`.

  flax draws the mask with `jax.random.bernoulli`, whose threefry hash XLA:CPU runs as a loop
  that it cannot fuse; `random_box.bernoulli` hashes the same counters unrolled (random_box's
  docstring; other keys get `jax.random.bernoulli` itself).
  """

  @nn.compact
  def __call__(self, inputs, deterministic: Optional[bool] = None, rng=None):
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    shape = tuple(1 if axis in self.broadcast_dims else n for axis, n in enumerate(inputs.shape))
    mask = jnp.broadcast_to(random_box.bernoulli(rng, keep_prob, shape), inputs.shape)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


class ProbabilityDropout(Dropout):
  """`Dropout` of the attention probabilities, whose key `dropout_attention` draws.

  Called as a module it is `Dropout`; `dropout_attention` instead takes its key (the same
  `make_rng` path, so the same mask) and applies it inside one custom VJP.
  """

  def key(self):
    """The rng key `__call__` draws its mask from (one `make_rng`; call one of the two once)."""
    return self.make_rng(self.rng_collection)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _softmax_dropout_values(logits, v, key, keep_prob, dtype):
  """einsum(select(keep, softmax(logits).astype(dtype) / keep_prob, 0), v), saving P alone.

  Forward: exactly `einsum_attention`'s softmax -> `ProbabilityDropout` -> value matmul (same
  operations, same bernoulli draw from `key` tied to the probabilities). Backward: autodiff's
  operations in autodiff's order (value matmul, dropout: select then divide, the cast, softmax's
  transposed JVP), with the keep mask saved as bits (`pack_bits`, 1 bit per probability) and the
  dropped probabilities recomputed from the saved float32 softmax output P. So the only
  full-size float residual is P: autodiff keeps both P (softmax backward) and the dropped
  probabilities D (value matmul backward), 2 x [B, H, T, S] float32 per attention layer. Saving
  the mask's bits (1/32 of P) instead of drawing it again from `key` saves the backward pass a
  second threefry draw, about half the decoder's random-bit time on XLA:CPU.

  Args:
    logits: [B, H, T, S] float32, masked already.
    v: [B, H, S, Dh] values, heads first (`heads_first`).
    key: the dropout rng key (typed or raw).
    keep_prob: 1 - dropout rate, in (0, 1).
    dtype: the dtype of the probabilities fed to the value matmul (q's dtype).

  Returns:
    [B, H, T, Dh].
  """
  return _softmax_dropout_values_fwd(logits, v, key, keep_prob, dtype)[0]


def _dropped(probs, key, keep_prob, box):
  """nn.Dropout's arithmetic, select(keep, probs / keep_prob, 0) with a bernoulli keep mask:
  (the mask as bits [..., S / 8] (`pack_bits`, along probs' last axis), the dropped
  probabilities). `box`: None (the mask of probs' shape) or `bernoulli_box`'s (shape, start,
  size, axes), which must give probs' shape.

  The key is tied to the probabilities (`tie_key_to`). The select reads the mask back from its
  bits: XLA:CPU otherwise fuses the threefry hash into both the packing and the select and
  computes it twice (0.55 s of op time per MOVi-A B=4 update).
  """
  key = tie_key_to(key, probs)
  if box is None:
    keep = random_box.bernoulli(key, keep_prob, probs.shape)
  else:
    keep = bernoulli_box(key, keep_prob, *box)
  bits = pack_bits(keep)
  return bits, _apply_mask(bits, probs, keep_prob)


def _apply_mask(bits, probs, keep_prob):
  """select(keep, probs / keep_prob, 0), keep unpacked from its bits (`pack_bits`)."""
  keep = unpack_bits(bits, probs.shape[-1])
  return jax.lax.select(keep, probs / keep_prob, jnp.zeros_like(probs))


def heads_first(x):
  """[B, T, H, Dh] <-> [B, H, T, Dh] (its own inverse)."""
  return x.transpose(0, 2, 1, 3)


def _values(d, v, keys_major: bool = False):
  """[B, H, T, Dh]: the dropped probabilities d [B, H, T, S] ([B, H, S, T] if keys_major) times
  the values v [B, H, S, Dh]."""
  return jnp.einsum("bhst,bhsd->bhtd" if keys_major else "bhts,bhsd->bhtd", d, v)


def _key_axis(keys_major: bool) -> int:
  return -2 if keys_major else -1


def _attend_dropped(logits, v, key, keep_prob, dtype, box, keys_major: bool = False):
  """Forward of softmax -> dropout -> value matmul: (out [B, H, T, Dh], P float32, mask bits).

  logits: [B, H, T, S], or [B, H, S, T] if keys_major (P and the mask bits as the logits)."""
  p = jax.nn.softmax(logits, axis=_key_axis(keys_major))  # float32
  bits, d = _dropped(p.astype(dtype), key, keep_prob, box)
  return _values(d, v, keys_major), p, bits


def _softmax_dropout_values_fwd(logits, v, key, keep_prob, dtype):
  out, p, bits = _attend_dropped(logits, v, key, keep_prob, dtype, box=None)
  return out, (p, v, bits)


def _softmax_dropout_values_bwd(keep_prob, dtype, res, g):
  p, v, packed_keep = res
  return (*_backward_from_probabilities(p, v, packed_keep, keep_prob, dtype, g), None)


def _backward_from_probabilities(p, v, packed_keep, keep_prob, dtype, g, keys_major=False):
  """(dlogits, dv) of softmax -> dropout -> value matmul, from P and the mask's bits (laid out as
  `_attend_dropped`'s)."""
  probs = p.astype(dtype)
  # Tied to the output's cotangent: else XLA:CPU computes the dropped probabilities d (float32,
  # [B, H, T, S]) of every layer right after the forward pass and keeps them all alive.
  packed_keep = tie_bits_to(packed_keep, g)
  d = _apply_mask(packed_keep, probs, keep_prob)  # as `_dropped`
  _, values_vjp = jax.vjp(functools.partial(_values, keys_major=keys_major), d, v)
  dd, dv = values_vjp(g)
  keep = unpack_bits(packed_keep, p.shape[-1])  # the forward's mask
  dprobs = jax.lax.select(keep, dd, jnp.zeros_like(dd)) / keep_prob  # nn.Dropout's transpose
  dp = dprobs.astype(jnp.float32)
  # jax.nn.softmax's JVP, y * (x_dot - sum(y * x_dot)), transposed as autodiff does.
  axis = _key_axis(keys_major)
  softmax_jvp = lambda x_dot: p * (x_dot - (p * x_dot).sum(axis, keepdims=True))
  (dlogits,) = jax.linear_transpose(softmax_jvp, p)(dp)
  return dlogits, dv


_softmax_dropout_values.defvjp(_softmax_dropout_values_fwd, _softmax_dropout_values_bwd)


def einsum_attention(q, k, v, mask=None, dropout_fn=None):
  """Plain softmax(Q K^T / sqrt(Dh)) V, softmax in float32.

  Args:
    q: [B, T, H, Dh] queries.
    k: [B, S, H, Dh] keys.
    v: [B, S, H, Dh] values.
    mask: optional bool, broadcastable to [B, H, T, S]; False = not attended.
    dropout_fn: optional function applied to the attention probabilities [B, H, T, S].

  Returns:
    [B, T, H, Dh] attended values, in q's dtype.
  """
  logits = _masked_logits(q, k, mask)  # [B, H, T, S] float32
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)  # [B, H, T, S]
  if dropout_fn is not None:
    probs = dropout_fn(probs)
  return jnp.einsum("bhts,bshd->bthd", probs, v)  # [B, T, H, Dh]


def _masked_logits(q, k, mask, spec: str = "bthd,bshd->bhts"):
  """Q K^T / sqrt(Dh) in float32, masked positions at float32's minimum: [B, H, T, S].

  q, k: [B, T, H, Dh] and [B, S, H, Dh] (or as `spec` says)."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum(spec, q, k).astype(jnp.float32) * scale  # [B, H, T, S]
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return logits


def dropout_attention(q, k, v, mask, dropout: "ProbabilityDropout"):
  """`einsum_attention(q, k, v, mask, partial(dropout, deterministic=False))`, less memory.

  Same forward output, bit for bit (same rng, same mask), and the same gradients (autodiff's
  operations, see `_softmax_dropout_values`), but the backward pass keeps one [B, H, T, S]
  float32 array (the softmax output) per call instead of two. `dropout.rate` must be in (0, 1).
  """
  logits = _masked_logits(q, k, mask)  # [B, H, T, S] float32
  return heads_first(_softmax_dropout_values(logits, heads_first(v), dropout.key(),
                                             1.0 - dropout.rate, jnp.dtype(q.dtype)))


def causal_dropout_attention(q, k, v, dropout: "ProbabilityDropout", num_blocks: int,
                             recompute: bool = False):
  """`dropout_attention(q, k, v, causal_mask(T), dropout)` computed in row blocks, skipping the
  masked keys.

  The T queries are cut into `num_blocks` blocks of T / num_blocks; block i attends to the keys
  up to its last query, (i + 1) T / num_blocks of them, with the causal mask inside that window.
  The keys after it are masked for every query of the block: their softmax weights are exactly
  zero in the plain path, so leaving them out changes nothing but the order of the softmax's sum
  (equal to float32 rounding). The dropout mask of each block is the same box of the same draw
  (`bernoulli_box`: bit for bit for threefry keys). The logits, probabilities, dropout masks and
  saved softmax outputs cover (num_blocks + 1) / (2 num_blocks) of the T x T square.

  Each block's logits, probabilities and mask are laid out keys major, [B, H, end, block] (the
  softmax runs over axis -2): XLA:CPU's batched matmuls at these shapes (48 matrices of a 64-row
  block against up to 1024 keys, Dh = 48) run 2-2.5x faster writing Q K^T as [keys, queries] than
  as [queries, keys], and the backward pass's products with those arrays are as fast or faster
  (one MOVi-A decoder layer's attention, forward + backward: its matmuls 0.45 -> 0.20 s of op
  time). Only the layout differs: the same sums, the same mask bits.

  One custom VJP covers all blocks: its residuals are q, k, v, each block's dropout mask as bits
  and, unless `recompute`, each block's float32 softmax output P. With `recompute` the backward
  pass computes each block's logits and P again from q and k (the same operations), which saves
  the P of every layer, (num_blocks + 1) / (2 num_blocks) x [B, H, T, T] float32, for one more
  Q K^T and softmax per block (`model.decoder.recompute_attention`).

  Args:
    q, k, v: [B, T, H, Dh] (self-attention: keys and values of the same T positions).
    dropout: the layer's `ProbabilityDropout`, rate in (0, 1).
    num_blocks: number of query blocks; must divide T.
    recompute: recompute P in the backward pass instead of saving it.

  Returns:
    [B, T, H, Dh].
  """
  length = q.shape[1]
  if length % num_blocks:
    raise ValueError(f"causal attention blocks: {num_blocks} does not divide {length} positions")
  # Heads first and stored (`materialize`), so that each block's slices of q, k and v are plain
  # copies: XLA:CPU otherwise fuses the transpose into every slice of the forward and backward
  # passes, each reading the projections with the transpose's stride.
  heads = [materialize(heads_first(a)) for a in (q, k, v)]  # [B, H, T, Dh] each
  out = _blocked_causal_attention(*heads, dropout.key(), 1.0 - dropout.rate, jnp.dtype(q.dtype),
                                  num_blocks, recompute)  # [B, H, T, Dh]
  return heads_first(out)


def _causal_blocks(length: int, num_blocks: int):
  """(start, end) of each query block; its key window is [0, end)."""
  block = length // num_blocks
  return [(start, start + block) for start in range(0, length, block)]


def _block_logits(q_block, k_window, start: int):
  """Masked float32 logits of the queries [start, start + block) over the keys [0, end), keys
  major: [B, H, end, block]; q_block: [B, H, block, Dh], k_window: [B, H, end, Dh]."""
  block, end = q_block.shape[2], k_window.shape[2]
  mask = jnp.arange(end)[:, None] <= jnp.arange(start, start + block)[None, :]  # [end, block]
  return _masked_logits(q_block, k_window, mask[None, None], "bhtd,bhsd->bhst")


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _blocked_causal_attention(q, k, v, key, keep_prob, dtype, num_blocks, recompute):
  """q, k, v: [B, H, T, Dh] -> [B, H, T, Dh] (`causal_dropout_attention`)."""
  return _blocked_causal_attention_fwd(q, k, v, key, keep_prob, dtype, num_blocks, recompute)[0]


def _blocked_causal_attention_fwd(q, k, v, key, keep_prob, dtype, num_blocks, recompute):
  batch, heads, length, _ = q.shape
  full_shape = (batch, heads, length, length)
  outs, saved_p, masks = [], [], []
  for start, end in _causal_blocks(length, num_blocks):
    # The block's mask: the box [start, end) x [0, end) of the full draw, keys major.
    box = (full_shape, (0, 0, start, 0), (batch, heads, end - start, end), (0, 1, 3, 2))
    out, p, bits = _attend_dropped(_block_logits(q[:, :, start:end], k[:, :, :end], start),
                                   v[:, :, :end], key, keep_prob, dtype, box, keys_major=True)
    outs.append(out)  # [B, H, block, Dh]
    masks.append(bits)  # [B, H, end, block / 8]
    saved_p.append(None if recompute else p)  # [B, H, end, block] float32
  return jnp.concatenate(outs, axis=2), (q, k, v, saved_p, masks)


def _blocked_causal_attention_bwd(keep_prob, dtype, num_blocks, recompute, res, g):
  q, k, v, saved_p, masks = res
  dq_blocks, dk, dv = [], jnp.zeros_like(k), jnp.zeros_like(v)
  for (start, end), p, bits in zip(_causal_blocks(q.shape[2], num_blocks), saved_p, masks):
    g_block = g[:, :, start:end]  # [B, H, block, Dh]
    # The block's q and its k, v windows tied to the cotangent (like the mask's bits): else
    # XLA:CPU shares the backward's slices with the forward's and keeps every block's slices
    # alive (4.5 copies of v and k per layer); with recompute, it would also recompute every
    # block's P right after the forward pass and keep them all alive, saving nothing.
    q_block, k_window, v_window = (tie_floats_to(a, g_block)
                                   for a in (q[:, :, start:end], k[:, :, :end], v[:, :, :end]))
    logits_fn = functools.partial(_block_logits, start=start)
    if recompute:
      logits, logits_vjp = jax.vjp(logits_fn, q_block, k_window)
      p = jax.nn.softmax(logits, axis=_key_axis(keys_major=True))
    else:
      _, logits_vjp = jax.vjp(logits_fn, q_block, k_window)  # its forward is unused: XLA drops it
    dlogits, dv_window = _backward_from_probabilities(p, v_window, bits, keep_prob, dtype,
                                                      g_block, keys_major=True)
    dq_block, dk_window = logits_vjp(dlogits)
    # Each block's dq is its own rows; dk and dv gather over the key windows, added in place
    # (the window gradients of q and k, not gradients padded to [B, H, T, Dh] and summed).
    dq_blocks.append(dq_block)
    dk = dk.at[:, :, :end].add(dk_window)
    dv = dv.at[:, :, :end].add(dv_window)
  return jnp.concatenate(dq_blocks, axis=2), dk, dv, None


_blocked_causal_attention.defvjp(_blocked_causal_attention_fwd, _blocked_causal_attention_bwd)


def _dot_product_attention(q, k, v, mask, causal):
  """`jax.nn.dot_product_attention`, with cuDNN flash attention on a GPU where it applies.

  cuDNN is tried for fp16/bf16 inputs with a head size that is a multiple of 8 and <= 128 and no
  explicit mask; where jax reports it unsupported (at trace time) XLA computes the same function.
  (jax's own default, implementation=None, is always XLA.) Shapes as `einsum_attention`.
  """
  use_cudnn = (jax.default_backend() == "gpu" and mask is None
               and q.dtype in (jnp.bfloat16, jnp.float16)
               and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128)
  if use_cudnn:
    try:
      return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")
    except (NotImplementedError, RuntimeError):
      pass
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation="xla")


def causal_mask(length: int):
  """Bool [1, 1, T, T]: position t attends to positions <= t."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


class MultiHeadAttention(nn.Module):
  """Multi-head attention with bias-free q/k/v/o projections.

  Self-attention: `__call__(x)`; cross-attention: `__call__(x, memory)` (queries from x, keys and
  values from memory). Incremental decoding: `decode_step(x_t, cache, index)` with an explicit
  cache dict(k, v) of [B, S, H, Dh] arrays (see `init_cache`), usable inside lax loops.
  For cross-attention while decoding, project the memory once with `project_key_value` and call
  `attend(project_query(x_t), k, v)` at each step.

  Attributes:
    num_heads: H.
    head_dim: Dh, per-head query/key/value size.
    out_dim: size of the output projection.
    q_bias: add a learned zero-initialised bias [H * Dh] to the projected queries (the authors'
      code quirk; the projections themselves have no bias).
    dropout_rate: dropout on the attention probabilities (`ProbabilityDropout`, applied by
      `dropout_attention`: softmax, dropout and value matmul under one custom VJP) and on the
      projected output.
    impl: "xla" (`jax.nn.dot_product_attention`: cuDNN flash attention on a GPU for bf16/fp16
      compute with head size <= 128, XLA otherwise; falls back to "einsum" while probability
      dropout is active, which `dot_product_attention` lacks) or "einsum" (plain softmax).
    out_init_gain: xavier gain of the output projection.
    causal_blocks: causal self-attention with probability dropout in this many query blocks
      (`causal_dropout_attention`: the same function, about half the work); 1 = one T x T block.
    recompute_attention: that blocked attention recomputes its softmax output in the backward
      pass instead of keeping it (`causal_dropout_attention(recompute=True)`).
    dtype: compute dtype (parameters stay float32).
  """
  num_heads: int
  head_dim: int
  out_dim: int
  q_bias: bool = False
  dropout_rate: float = 0.0
  impl: str = "xla"
  out_init_gain: float = 1.0
  causal_blocks: int = 1
  recompute_attention: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    if self.impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention impl {self.impl!r} is not one of {ATTENTION_IMPLS}")
    inner = self.num_heads * self.head_dim
    dense = functools.partial(Dense, use_bias=False, dtype=self.dtype)
    self.q_proj = dense(inner, kernel_init=xavier_uniform())
    self.k_proj = dense(inner, kernel_init=xavier_uniform())
    self.v_proj = dense(inner, kernel_init=xavier_uniform())
    self.o_proj = dense(self.out_dim, kernel_init=xavier_uniform(self.out_init_gain))
    if self.q_bias:
      self.query_bias = self.param("query_bias", nn.initializers.zeros, (inner,))
    self.attn_dropout = ProbabilityDropout(self.dropout_rate)
    self.out_dropout = Dropout(self.dropout_rate)

  def heads(self, x):
    """Projections [..., H * Dh] -> [..., H, Dh] (q_bias is not added here)."""
    return x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))  # [B, T, H, Dh]

  def project_query(self, x):
    """x: [B, T, d_in] -> queries [B, T, H, Dh]."""
    q = self.q_proj(x)  # [B, T, H*Dh]
    if self.q_bias:
      q = q + self.query_bias.astype(q.dtype)
    return self.heads(q)

  def project_key_value(self, memory):
    """memory: [B, S, d_mem] -> (keys, values), each [B, S, H, Dh]."""
    return self.heads(self.k_proj(memory)), self.heads(self.v_proj(memory))

  def attend(self, q, k, v, mask=None, causal: bool = False, deterministic: bool = True):
    """Attention of projected queries to projected keys/values, then the output projection.

    Args:
      q: [B, T, H, Dh]; k, v: [B, S, H, Dh].
      mask: optional bool broadcastable to [B, H, T, S]; False = not attended.
      causal: query t attends to keys <= t (self-attention, T == S).
      deterministic: no dropout.

    Returns:
      [B, T, out_dim].
    """
    dropout_active = not deterministic and self.dropout_rate > 0.0
    probability_dropout = dropout_active and self.dropout_rate < 1.0
    if self.impl == "xla" and not dropout_active:
      k, v = k.astype(q.dtype), v.astype(q.dtype)
      out = _dot_product_attention(q, k, v, mask, causal)  # [B, T, H, Dh]
    elif probability_dropout and causal and mask is None and self.causal_blocks > 1:
      out = causal_dropout_attention(q, k, v, self.attn_dropout, self.causal_blocks,
                                     self.recompute_attention)
    else:
      if causal:
        cm = causal_mask(q.shape[1])  # [1, 1, T, T]
        mask = cm if mask is None else jnp.logical_and(mask, cm)
      if probability_dropout:
        out = dropout_attention(q, k, v, mask, self.attn_dropout)  # [B, T, H, Dh]
      else:
        dropout_fn = None
        if dropout_active:
          dropout_fn = functools.partial(self.attn_dropout, deterministic=False)
        out = einsum_attention(q, k, v, mask, dropout_fn)  # [B, T, H, Dh]
    out = out.reshape(out.shape[:2] + (self.num_heads * self.head_dim,))  # [B, T, H*Dh]
    return self.out_dropout(self.o_proj(out), deterministic=deterministic)  # [B, T, out_dim]

  def __call__(self, x, memory=None, *, mask=None, causal: bool = False,
               deterministic: bool = True):
    """Self-attention (memory None) or cross-attention.

    Args:
      x: [B, T, d_in] query stream.
      memory: optional [B, S, d_mem] keys/values source; None = x.
      mask: optional bool broadcastable to [B, H, T, S].
      causal: causal self-attention.
      deterministic: no dropout.

    Returns:
      [B, T, out_dim].
    """
    q = self.project_query(x)  # [B, T, H, Dh]
    k, v = self.project_key_value(x if memory is None else memory)  # [B, S, H, Dh] each
    return self.attend(q, k, v, mask=mask, causal=causal, deterministic=deterministic)

  def init_cache(self, batch: int, length: int):
    """Empty self-attention KV cache: dict(k, v), each zeros [B, S, H, Dh] in the compute dtype."""
    shape = (batch, length, self.num_heads, self.head_dim)
    zeros = jnp.zeros(shape, jnp.dtype(self.dtype))
    return dict(k=zeros, v=zeros)

  def decode_step(self, x, cache, index):
    """One causal self-attention step with a KV cache (deterministic).

    Args:
      x: [B, 1, d_in] the stream at position `index`.
      cache: dict(k, v), each [B, S, H, Dh]; positions < index filled by earlier steps.
      index: int scalar (may be traced), the position of x.

    Returns:
      (y [B, 1, out_dim], the cache with position `index` written).
    """
    q = self.project_query(x)  # [B, 1, H, Dh]
    k, v = self.project_key_value(x)  # [B, 1, H, Dh] each
    k_all = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype), index, 1)
    v_all = jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype), index, 1)
    length = k_all.shape[1]
    mask = (jnp.arange(length) <= index)[None, None, None, :]  # [1, 1, 1, S]
    y = self.attend(q, k_all, v_all, mask=mask, deterministic=True)  # [B, 1, out_dim]
    return y, dict(k=k_all, v=v_all)


class FeedForward(nn.Module):
  """Dense(hidden) -> ReLU -> Dense(out_dim) -> dropout, with biases.

  Attributes:
    hidden_dim: hidden width (kaiming_uniform init).
    out_dim: output width (xavier_uniform init with `out_init_gain`).
    dropout_rate: dropout on the output.
  """
  hidden_dim: int
  out_dim: int
  dropout_rate: float = 0.0
  out_init_gain: float = 1.0
  dtype: Any = jnp.float32

  def setup(self):
    self.hidden = Dense(self.hidden_dim, dtype=self.dtype,
                        kernel_init=nn.initializers.he_uniform())
    self.out = Dense(self.out_dim, dtype=self.dtype,
                     kernel_init=xavier_uniform(self.out_init_gain))
    # Named as nn.Dropout's auto-name, so the rng path (and mask) is nn.Dropout's.
    self.Dropout_0 = Dropout(self.dropout_rate)

  def __call__(self, x, deterministic: bool = True):
    # x: [..., d_in] -> [..., out_dim]
    return self.from_hidden(self.hidden(x), deterministic)

  def from_hidden(self, h, deterministic: bool = True):
    """The layers after the hidden Dense: its output h [..., hidden_dim] -> [..., out_dim]."""
    return self.Dropout_0(self.out(relu(h)), deterministic=deterministic)


class SlotTransformerBlock(nn.Module):
  """Pre-LN block: x + MHA(LN x); x + MLP(LN x). No dropout, query bias on (authors' code)."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  impl: str = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    # x: [B, N, d] -> [B, N, d]
    d = x.shape[-1]
    y = layer_norm(self.dtype, "attention_norm")(x)
    x = x + MultiHeadAttention(self.num_heads, self.head_dim, d, q_bias=True, impl=self.impl,
                               dtype=self.dtype, name="attention")(y)
    y = layer_norm(self.dtype, "mlp_norm")(x)
    return x + FeedForward(self.mlp_dim, d, dtype=self.dtype, name="mlp")(y)


class SlotTransformer(nn.Module):
  """Transformer across the K slots: `num_layers` pre-LN blocks, no position encoding (slot
  permutation equivariant), no dropout, no final LayerNorm.

  Used as the mask transformer (3 layers, 3 heads, Dh 512, MLP 1024, d 512: 12,598,272 params),
  the initial-slot transformer and the prior transformer (d 128, Dh 128, MLP 256).

  Attributes:
    num_layers: number of blocks (params `block_0` ...).
    num_heads: H.
    head_dim: Dh (independent of the model size d, which is the input's last axis).
    mlp_dim: MLP hidden width.
    impl: attention implementation, "xla" or "einsum".
    remat: wrap each block in `nn.remat` (recompute activations in the backward pass).
    dtype: compute dtype.
  """
  num_layers: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  impl: str = "xla"
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    # x: [B, N, d] -> [B, N, d]
    if x.ndim != 3:
      raise ValueError(f"SlotTransformer expects [B, N, d], got shape {x.shape}")
    block_cls = nn.remat(SlotTransformerBlock) if self.remat else SlotTransformerBlock
    for i in range(self.num_layers):
      x = block_cls(self.num_heads, self.head_dim, self.mlp_dim, impl=self.impl,
                    dtype=self.dtype, name=f"block_{i}")(x)
    return x
