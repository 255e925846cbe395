"""STEVE-style autoregressive transformer decoder over dVAE tokens (SPEC.md section 2, "Decoder").

The slots z [B, K, D] become K memory tokens; the token stream [BOS, tokens[:-1]] predicts every
token of the frame by teacher forcing (`TransformerDecoder.__call__`), or token by token with a
KV cache for pictures (`TransformerDecoder.greedy_decode`). All parameters live under this one
module: they form the "decoder" optimiser group (SPEC.md section 3).

Parameter tree (full config, SPEC.md section 7):
  slot_memory/{hidden, out}              82,368   MLP D -> memory_hidden (ReLU) -> d_model
  token_embedding/embedding             786,432   [vocab, d_model]
  bos                                       192   [1, 1, d_model]
  position_embedding                    196,608   [num_tokens, d_model]
  input_norm                                384   LayerNorm after the input dropout
  transformer/{block_0.., final_norm} 4,735,872   decoder blocks and the final LayerNorm
  logits/{norm, dense}                  786,816   LayerNorm -> Dense d_model -> vocab, no bias

Initialisation follows STEVE: xavier_uniform projections (attention and FFN output projections
with gain (3 * num_layers)^-0.5), kaiming_uniform FFN hidden layer, N(0, 1) token embedding,
xavier-style uniform BOS, truncated N(0, 1) in [-2, 2] position embedding, zero biases.

Shapes: B batch, K slots, D slot size, N tokens per frame, V vocabulary, d d_model.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vonet_jax.models import random_box
from vonet_jax.models.layers import Dense
from vonet_jax.models.lean_backward import normalize_project, relu, tie_floats_to
from vonet_jax.models.short_broadcast import repeat
from vonet_jax.models.transformer import (Dropout, FeedForward, MultiHeadAttention, layer_norm,
                                         xavier_uniform)


def _bos_init(key, shape, dtype=jnp.float32):
  """PyTorch xavier_uniform_ of a [1, 1, d] tensor: U(-sqrt(3/d), sqrt(3/d))."""
  bound = jnp.sqrt(3.0 / shape[-1])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def _position_init(key, shape, dtype=jnp.float32):
  """PyTorch trunc_normal_: N(0, 1) truncated to [-2, 2]."""
  return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def token_cross_entropy(logits, tokens):
  """Cross-entropy of integer target tokens, summed over tokens (computed in float32).

  Args:
    logits: [B, N, V].
    tokens: int [B, N].

  Returns:
    [B] loss per frame.
  """
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tokens)
  return ce.sum(axis=-1)  # [B]


class DecoderBlock(nn.Module):
  """Pre-LN block: causal self-attention, cross-attention to the memory, FFN.

  The first block replaces its stream by LN(stream) before the self-attention residual (STEVE):
    first:  x = LN_self(x); x = x + SelfAttn(x)
    others: x = x + SelfAttn(LN_self(x))
  then x = x + CrossAttn(LN_cross(x), memory); x = x + FFN(LN_ffn(x)).
  """
  d_model: int
  num_heads: int
  ffn_dim: int
  dropout: float
  is_first: bool
  out_init_gain: float = 1.0
  impl: str = "xla"
  causal_blocks: int = 1
  recompute_attention: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    head_dim = self.d_model // self.num_heads
    attention = lambda: MultiHeadAttention(
        self.num_heads, head_dim, self.d_model, q_bias=False, dropout_rate=self.dropout,
        impl=self.impl, out_init_gain=self.out_init_gain, causal_blocks=self.causal_blocks,
        recompute_attention=self.recompute_attention, dtype=self.dtype)
    self.self_attention_norm = layer_norm(self.dtype)
    self.self_attention = attention()
    self.cross_attention_norm = layer_norm(self.dtype)
    self.cross_attention = attention()
    self.ffn_norm = layer_norm(self.dtype)
    self.ffn = FeedForward(self.ffn_dim, self.d_model, self.dropout, self.out_init_gain,
                           dtype=self.dtype)

  def _normalized_projections(self, norm, x, layers):
    """[norm(x) @ kernel of each Dense layer] ([..., features] each, without the layers'
    biases) through `normalize_project`, whose backward pass keeps less than the layers'."""
    if self.is_initializing():  # create the parameters as the plain layers do
      y = norm(x)
      for layer in layers:
        layer(y)
    params = norm.variables["params"]
    kernels = tuple(layer.variables["params"]["kernel"] for layer in layers)
    return normalize_project(x.astype(self.dtype), params["scale"], params["bias"], kernels,
                             norm.epsilon)

  def _self_attention_residual(self, x, attend):
    # x: [B, T, d] -> [B, T, d]; attend: the self-attention of a normalised stream.
    if self.is_first:
      x = self.self_attention_norm(x)
      return x + attend(x)
    return x + attend(self.self_attention_norm(x))

  def _cross_and_ffn(self, x, cross_kv, deterministic):
    # x: [B, T, d]; cross_kv: memory keys/values [B, K, H, Dh] each -> [B, T, d]
    cross = self.cross_attention
    (q,) = self._normalized_projections(self.cross_attention_norm, x, (cross.q_proj,))
    x = x + cross.attend(cross.heads(q), *cross_kv, deterministic=deterministic)
    (h,) = self._normalized_projections(self.ffn_norm, x, (self.ffn.hidden,))
    h = h + self.ffn.hidden.variables["params"]["bias"].astype(h.dtype)  # [B, T, ffn_dim]
    return x + self.ffn.from_hidden(h, deterministic=deterministic)

  def __call__(self, x, memory, deterministic: bool):
    """Teacher forcing. x: [B, N, d]; memory: [B, K, d] -> [B, N, d]."""
    attention = self.self_attention
    q, k, v = self._normalized_projections(
        self.self_attention_norm, x, (attention.q_proj, attention.k_proj, attention.v_proj))
    if self.is_first:  # the stream becomes its normalised self (class docstring)
      x = self.self_attention_norm(x)
    x = x + attention.attend(*map(attention.heads, (q, k, v)), causal=True,
                             deterministic=deterministic)
    return self._cross_and_ffn(x, self.memory_key_value(memory), deterministic)

  def memory_key_value(self, memory):
    """memory: [B, K, d] -> cross-attention (keys, values), each [B, K, H, Dh]."""
    return self.cross_attention.project_key_value(memory)

  def init_cache(self, batch: int, length: int):
    """Empty self-attention KV cache, dict(k, v) of zeros [B, length, H, Dh]."""
    return self.self_attention.init_cache(batch, length)

  def decode_step(self, x, cross_kv, cache, index):
    """One position, deterministic. x: [B, 1, d] at position `index` -> ([B, 1, d], cache)."""
    new_cache = {}

    def attend(y):
      out, cache_out = self.self_attention.decode_step(y, cache, index)
      new_cache.update(cache_out)
      return out

    x = self._self_attention_residual(x, attend)
    return self._cross_and_ffn(x, cross_kv, True), new_cache


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recomputed_block(apply_block, params, x, memory, key):
  """apply_block(params, x, memory, key), whose backward pass recomputes the block.

  The residuals are the block's inputs alone. The recomputation is tied to the output cotangent
  (`lean_backward.tie_floats_to`): XLA:CPU otherwise runs every block's recomputation at the start
  of the backward pass and keeps all their activations alive at once (why `nn.remat` lowers
  nothing there).
  """
  return apply_block(params, x, memory, key)


def _recomputed_block_fwd(apply_block, params, x, memory, key):
  return apply_block(params, x, memory, key), (params, x, memory, key)


def _recomputed_block_bwd(apply_block, res, g):
  params, x, memory, key = res
  _, block_vjp = jax.vjp(lambda p, x_, m: apply_block(p, x_, m, key), params,
                         tie_floats_to(x, g), memory)
  return (*block_vjp(g), None)


_recomputed_block.defvjp(_recomputed_block_fwd, _recomputed_block_bwd)


def _apply_training_block(block: "DecoderBlock", params, x, memory, key):
  """The unbound `block` in training mode with dropout key `key`: [B, N, d] -> [B, N, d]."""
  return block.apply({"params": params}, x, memory, False, rngs={"dropout": key})


class DecoderStack(nn.Module):
  """`num_layers` decoder blocks and the final LayerNorm (params block_i, final_norm).

  With `recompute_blocks`, each block's training pass runs as a pure function of its parameters,
  input, memory and a dropout key drawn here, under `_recomputed_block`: the backward pass
  recomputes the block instead of keeping its activations. The same function and distribution;
  the dropout masks come from that key, so they differ from the default path's.
  """
  d_model: int
  num_heads: int
  num_layers: int
  ffn_dim: int
  dropout: float
  impl: str = "xla"
  causal_blocks: int = 1
  recompute_attention: bool = False
  recompute_blocks: bool = False
  remat: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    # __call__(self, x, memory, deterministic): deterministic (index 3, self = 0) is static.
    block_cls = nn.remat(DecoderBlock, static_argnums=(3,)) if self.remat else DecoderBlock
    gain = (3 * self.num_layers) ** -0.5  # STEVE's output-projection gain
    for i in range(self.num_layers):  # params block_0 .. block_{L-1}
      setattr(self, f"block_{i}", block_cls(
          self.d_model, self.num_heads, self.ffn_dim, self.dropout, is_first=(i == 0),
          out_init_gain=gain, impl=self.impl, causal_blocks=self.causal_blocks,
          recompute_attention=self.recompute_attention, dtype=self.dtype))
    self.final_norm = layer_norm(self.dtype)

  @property
  def blocks(self):
    return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

  def __call__(self, x, memory, deterministic: bool):
    """x: [B, N, d]; memory: [B, K, d] -> [B, N, d]."""
    recompute = self.recompute_blocks and not deterministic and not self.is_initializing()
    for block in self.blocks:
      if recompute:
        apply_block = functools.partial(_apply_training_block, block.clone(parent=None))
        x = _recomputed_block(apply_block, block.variables["params"], x, memory,
                              self.make_rng("dropout"))
      else:
        x = block(x, memory, deterministic)
    return self.final_norm(x)

  def memory_key_value(self, memory):
    """memory: [B, K, d] -> per-block cross-attention (keys, values), each [B, K, H, Dh]."""
    return [block.memory_key_value(memory) for block in self.blocks]

  def init_cache(self, batch: int, length: int):
    """Per-block empty KV caches."""
    return [block.init_cache(batch, length) for block in self.blocks]

  def decode_step(self, x, cross_kvs, caches, index):
    """x: [B, 1, d] at position `index` -> ([B, 1, d], updated per-block caches)."""
    new_caches = []
    for block, cross_kv, cache in zip(self.blocks, cross_kvs, caches):
      x, cache = block.decode_step(x, cross_kv, cache, index)
      new_caches.append(cache)
    return self.final_norm(x), new_caches


class SlotMemory(nn.Module):
  """MLP z_k: D -> hidden (ReLU) -> d_model, one memory token per slot, no position embedding."""
  hidden: int
  d_model: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    # z: [B, K, D] -> [B, K, d]
    h = relu(Dense(self.hidden, dtype=self.dtype,
                   kernel_init=nn.initializers.he_uniform(), name="hidden")(z))
    return Dense(self.d_model, dtype=self.dtype, kernel_init=xavier_uniform(), name="out")(h)


@jax.custom_vjp
def frame_cross_entropy(x, kernel, tokens):
  """Cross-entropy of `tokens` under logits x @ kernel, summed over each frame's tokens.

  The same function and gradients as `token_cross_entropy(x @ kernel, tokens)`, computed one
  frame at a time (logits [N, V], float32): the logits of all frames ([B*T, N, V], 0.4 GB at B=8
  for MOVi-A, twice: logits and softmax) are never held. Under differentiation the forward pass
  also computes each frame's gradients for a unit cotangent, while its logits and softmax are at
  hand: d loss_f / d x_f [N, d] and d loss_f / d kernel [d, V] (3 MB a frame for MOVi-A); the
  backward pass scales them by the frame's cotangent and sums the kernel's. So the logits are
  computed once (an earlier form recomputed them in the backward pass: one [N, d] x [d, V] matmul
  and its exponentials more per frame). The frames are unrolled (XLA's `cost_analysis` counts a
  loop's body once, whatever its trip count), each tied to the one before (`tie_floats_to`):
  XLA would otherwise merge the frames' matmuls into one over all frames, holding all logits
  again.

  Args:
    x: [F, N, d] normalised decoder outputs of F frames.
    kernel: [d, V].
    tokens: int [F, N].

  Returns:
    [F] float32 loss per frame.
  """
  return _frames(x, kernel, tokens, with_gradients=False)[0]


def _frames(x, kernel, tokens, with_gradients: bool):
  """([F] loss per frame, and with_gradients: the unit-cotangent gradients [F, N, d], [F, d, V])."""
  def frame(previous, args):
    x_f, t_f = args
    x_f = tie_floats_to(x_f, previous)
    logits = jnp.dot(x_f, kernel.astype(x_f.dtype)).astype(jnp.float32)  # [N, V]
    lse = jax.nn.logsumexp(logits, axis=-1)  # [N]
    target = jnp.take_along_axis(logits, t_f[:, None], axis=-1)[:, 0]  # [N]
    ce = (lse - target).sum()
    if not with_gradients:
      return lse, (ce,)
    p = jnp.exp(logits - lse[:, None])  # softmax [N, V]
    is_target = jax.lax.broadcasted_iota(jnp.int32, p.shape, 1) == t_f[:, None]
    d = jnp.where(is_target, p - 1.0, p).astype(x_f.dtype)  # d ce / d logits
    dx_f = jnp.dot(d, kernel.astype(d.dtype).T)  # [N, d]
    d_kernel_f = jnp.dot(x_f.T, d, preferred_element_type=jnp.float32).astype(kernel.dtype)
    return dx_f, (ce, dx_f, d_kernel_f)

  start = (jnp.zeros(x.shape[1:], x.dtype) if with_gradients
           else jnp.zeros(x.shape[1], jnp.float32))  # the carry: dx_f [N, d] or lse [N]
  _, outputs = jax.lax.scan(frame, start, (x, tokens), unroll=True)
  return outputs


def _frame_cross_entropy_fwd(x, kernel, tokens):
  ce, dx, d_kernel = _frames(x, kernel, tokens, with_gradients=True)
  return ce, (dx, d_kernel)


def _frame_cross_entropy_bwd(res, g):
  dx, d_kernel = res  # [F, N, d], [F, d, V]: the gradients of a unit cotangent per frame
  d_kernel_sum = jnp.einsum("f,fdv->dv", g.astype(jnp.float32), d_kernel,
                            preferred_element_type=jnp.float32)
  return dx * g[:, None, None].astype(dx.dtype), d_kernel_sum.astype(d_kernel.dtype), None


frame_cross_entropy.defvjp(_frame_cross_entropy_fwd, _frame_cross_entropy_bwd)


class LogitsHead(nn.Module):
  """LayerNorm -> Dense d_model -> vocab (no bias); or straight to the loss (`cross_entropy`)."""
  vocab_size: int
  dtype: Any = jnp.float32

  def setup(self):
    self.norm = layer_norm(self.dtype)
    self.dense = _DenseKernel(self.vocab_size)  # nn.Dense's parameters

  def _normalised_and_kernel(self, x):
    return self.norm(x), self.dense(x.shape[-1]).astype(self.dtype)

  def __call__(self, x):
    # x: [B, N, d] -> [B, N, V]
    x, kernel = self._normalised_and_kernel(x)
    return jnp.dot(x.reshape(-1, x.shape[-1]), kernel).reshape(x.shape[:-1] + (-1,))

  def cross_entropy(self, x, tokens):
    """x [B, N, d], int tokens [B, N] -> [B] loss per frame (`frame_cross_entropy`)."""
    x, kernel = self._normalised_and_kernel(x)
    return frame_cross_entropy(x, kernel, tokens)


class _DenseKernel(nn.Module):
  """The kernel [d, features] of a bias-free `nn.Dense` (xavier-uniform init), by itself."""
  features: int

  @nn.compact
  def __call__(self, d: int):
    return self.param("kernel", xavier_uniform(), (d, self.features))


class TransformerDecoder(nn.Module):
  """Autoregressive decoder of dVAE tokens conditioned on slots.

  Attributes:
    vocab_size: V (4096).
    num_tokens: N, tokens per frame (1024 = 32x32); the position embedding's length.
    d_model: d (192).
    num_heads: attention heads (4; head size d / heads).
    num_layers: decoder blocks (8).
    ffn_dim: FFN hidden width (768).
    dropout: dropout on the input stream, attention probabilities, attention and FFN outputs.
    memory_hidden: hidden width of the slot-memory MLP (config.model.mlp_hidden, 256).
    impl: attention implementation, "xla" or "einsum".
    causal_blocks: query blocks of the training self-attention (with dropout): the same function
      with the fully masked key blocks skipped (`transformer.causal_dropout_attention`).
    recompute_attention: that attention's backward pass recomputes the softmax output instead
      of keeping it (the same function and gradients; less memory, more time).
    recompute_blocks: each block's backward pass recomputes the block from its input
      (`DecoderStack`; the same function, other dropout masks; less memory, more time).
    remat: wrap each block's teacher-forcing pass in `nn.remat`.
    token_dropout: in training, the probability that a previous token's embedding is zeroed
      (its position embedding kept; BOS never): word dropout (Bowman et al., 2016), which makes
      the decoder lean on the slots instead of the tokens before. Not in the paper: 0 (off) by
      default; an option for small-scale runs (README, "Does it learn objects on a CPU?").
    dtype: compute dtype (parameters float32; `cross_entropy` gives a float32 loss).
  """
  vocab_size: int
  num_tokens: int
  d_model: int = 192
  num_heads: int = 4
  num_layers: int = 8
  ffn_dim: int = 768
  dropout: float = 0.1
  memory_hidden: int = 256
  impl: str = "xla"
  causal_blocks: int = 1
  recompute_attention: bool = False
  recompute_blocks: bool = False
  remat: bool = False
  token_dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
    d = self.d_model
    self.slot_memory = SlotMemory(self.memory_hidden, d, dtype=self.dtype)
    self.token_embedding = nn.Embed(self.vocab_size, d, dtype=self.dtype,
                                    embedding_init=nn.initializers.normal(1.0))
    self.bos = self.param("bos", _bos_init, (1, 1, d))
    self.position_embedding = self.param("position_embedding", _position_init,
                                         (self.num_tokens, d))
    self.input_dropout = Dropout(self.dropout)
    self.input_norm = layer_norm(self.dtype)
    self.transformer = DecoderStack(d, self.num_heads, self.num_layers, self.ffn_dim,
                                    self.dropout, impl=self.impl,
                                    causal_blocks=self.causal_blocks,
                                    recompute_attention=self.recompute_attention,
                                    recompute_blocks=self.recompute_blocks,
                                    remat=self.remat, dtype=self.dtype)
    self.logits = LogitsHead(self.vocab_size, dtype=self.dtype)

  def _check_z(self, z):
    if z.ndim != 3:
      raise ValueError(f"TransformerDecoder expects slots z [B, K, D], got shape {z.shape}")

  def __call__(self, z, tokens, deterministic: bool = True):
    """Teacher-forced logits.

    Args:
      z: [B, K, D] slot latents.
      tokens: int [B, N] target tokens, N <= num_tokens; position n sees tokens < n only.
      deterministic: no dropout (otherwise needs the "dropout" rng).

    Returns:
      logits [B, N, V] (compute dtype) predicting tokens.
    """
    return self.logits(self._teacher_forced(z, tokens, deterministic))

  def cross_entropy(self, z, tokens, deterministic: bool = True):
    """`token_cross_entropy(self(z, tokens, deterministic), tokens)`, [B] float32, without
    holding the logits of all frames (`frame_cross_entropy`)."""
    return self.logits.cross_entropy(self._teacher_forced(z, tokens, deterministic), tokens)

  def _teacher_forced(self, z, tokens, deterministic):
    """The final stream [B, N, d] of teacher forcing (`__call__`'s arguments)."""
    self._check_z(z)
    b, n = tokens.shape
    if n > self.num_tokens:
      raise ValueError(f"{n} tokens given, the position embedding holds {self.num_tokens}")
    memory = self.slot_memory(z)  # [B, K, d]
    bos = jnp.broadcast_to(self.bos.astype(memory.dtype), (b, 1, self.d_model))  # [B, 1, d]
    previous = self.token_embedding(tokens[:, :-1])  # [B, N-1, d]
    if self.token_dropout and not deterministic:
      keep = random_box.bernoulli(self.make_rng("dropout"), 1.0 - self.token_dropout,
                                  previous.shape[:2])  # [B, N-1]
      previous = previous * keep[..., None].astype(previous.dtype)
    x = jnp.concatenate([bos, previous.astype(bos.dtype)], axis=1)  # [B, N, d]
    x = x + repeat(self.position_embedding[None, :n].astype(x.dtype), x.shape[0], 0)  # [B, N, d]
    x = self.input_norm(self.input_dropout(x, deterministic=deterministic))
    return self.transformer(x, memory, deterministic)  # [B, N, d]

  def _decode_step(self, previous, index, cross_kvs, caches):
    """Logits of position `index` given the token at index - 1 (ignored at index 0: BOS).

    previous: int [B]; returns (logits [B, V], caches).
    """
    b = previous.shape[0]
    emb = self.token_embedding(previous)[:, None]  # [B, 1, d]
    bos = jnp.broadcast_to(self.bos.astype(emb.dtype), emb.shape)  # [B, 1, d]
    x = jnp.where(index == 0, bos, emb)  # [B, 1, d]
    pos = jax.lax.dynamic_slice_in_dim(self.position_embedding, index, 1, axis=0)  # [1, d]
    x = self.input_norm(x + pos[None].astype(x.dtype))  # [B, 1, d]
    x, caches = self.transformer.decode_step(x, cross_kvs, caches, index)  # [B, 1, d]
    return self.logits(x)[:, 0].reshape(b, self.vocab_size), caches  # [B, V]

  def greedy_decode(self, z):
    """Greedy autoregressive decoding of all `num_tokens` tokens (deterministic, KV cache).

    One `lax.while_loop` (lifted with `nn.while_loop`) over positions; compiles once.

    Args:
      z: [B, K, D] slot latents.

    Returns:
      int32 [B, num_tokens] tokens.
    """
    self._check_z(z)
    b = z.shape[0]
    memory = self.slot_memory(z)  # [B, K, d]
    cross_kvs = self.transformer.memory_key_value(memory)  # per block [B, K, H, Dh] x 2
    caches = self.transformer.init_cache(b, self.num_tokens)  # per block [B, N, H, Dh] x 2
    tokens = jnp.zeros((b, self.num_tokens), jnp.int32)  # [B, N]

    def cond_fn(mdl, carry):
      return carry[0] < self.num_tokens

    def body_fn(mdl, carry):
      index, tokens, caches = carry
      previous = jax.lax.dynamic_index_in_dim(tokens, jnp.maximum(index - 1, 0), axis=1,
                                              keepdims=False)  # [B]
      logits, caches = mdl._decode_step(previous, index, cross_kvs, caches)  # [B, V]
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B]
      tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], index, axis=1)
      return index + 1, tokens, caches

    init = (jnp.array(0, jnp.int32), tokens, caches)
    _, tokens, _ = nn.while_loop(cond_fn, body_fn, self, init)
    return tokens
