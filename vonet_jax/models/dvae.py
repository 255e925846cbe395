"""Discrete VAE of SLATE/STEVE (SPEC.md section 2, "Decoder").

Images [B, H, W, 3] in [0, 1] -> per-patch (4x4) log-probabilities over a V-word vocabulary
[B, H/4, W/4, V]; a Gumbel-softmax relaxed sample is decoded back to pixels, and the argmax of that
same sample gives the target tokens of the transformer decoder. The dVAE is trained only by its
own reconstruction loss: its tokens are integers, so no other gradient reaches it.

Parameter tree (hidden 64, vocab 4096, SPEC.md section 7):
  encoder/{patch, conv_0..conv_4, vocab}                                      290,176
  decoder/{vocab, conv3x3_0, conv_0_0, conv_0_1, expand_0, conv3x3_1, conv_1_0, conv_1_1,
           expand_1, out}                                                     386,179

Initialisation (SLATE): convolutions followed by a ReLU use kaiming_uniform (he_uniform), the
linear ones (the vocabulary logits, the output conv) xavier_uniform; biases zero.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vonet_jax.models import random_box
from vonet_jax.models.layers import PointwiseConv
from vonet_jax.models.lean_backward import relu, tie_key_to
from vonet_jax.models.transformer import xavier_uniform

_PATCH = 4  # encoder stride: one token per 4x4 patch


def pixel_shuffle(x, factor: int):
  """PyTorch's PixelShuffle in NHWC: channel c*r*r + i*r + j -> pixel (h*r+i, w*r+j) of channel c.

  Args:
    x: [B, H, W, C*r*r].
    factor: r.

  Returns:
    [B, H*r, W*r, C].
  """
  b, h, w, crr = x.shape
  r = factor
  if crr % (r * r):
    raise ValueError(f"pixel_shuffle: {crr} channels are not divisible by {r * r}")
  c = crr // (r * r)
  x = x.reshape(b, h, w, c, r, r)  # [B, H, W, C, i, j]
  x = x.transpose(0, 1, 4, 2, 5, 3)  # [B, H, i, W, j, C]
  return x.reshape(b, h * r, w * r, c)


def _conv(features, kernel, before_relu, dtype, name, strides=1, padding=0):
  """Conv with bias; explicit symmetric zero padding; kaiming init before a ReLU else xavier."""
  init = nn.initializers.he_uniform() if before_relu else xavier_uniform()
  if kernel == 1 and strides == 1 and padding == 0:
    return PointwiseConv(features, kernel_init=init, dtype=dtype, name=name)
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=((padding, padding), (padding, padding)), kernel_init=init,
                 dtype=dtype, name=name)


def _perturbed(logits, tau, rng):
  """(logits + Gumbel noise) / tau, float32 [..., V]."""
  # The key is tied to the logits (same key, see tie_key_to): otherwise XLA:CPU draws the noise at
  # the start of the step, as it depends on the key alone, and keeps it alive meanwhile.
  # random_box.gumbel is jax.random.gumbel bit for bit, fused into one loop on XLA:CPU.
  gumbel = random_box.gumbel(tie_key_to(rng, logits), logits.shape)  # [..., V]
  return (logits.astype(jnp.float32) + gumbel) / tau


def gumbel_softmax(log_probs, tau, rng):
  """Relaxed one-hot sample softmax((log p + Gumbel) / tau) and its argmax.

  log p may be given up to a constant per token (the logits before their log-softmax): softmax
  is invariant to it, so the sample and its gradient are the same (to float rounding).

  Args:
    log_probs: [..., V] float32, log-probabilities or unnormalised logits.
    tau: scalar temperature > 0 (may be traced).
    rng: PRNG key of the Gumbel noise.

  Returns:
    (relaxed [..., V] float32, tokens int32 [...] = argmax of relaxed).
  """
  relaxed = jax.nn.softmax(_perturbed(log_probs, tau, rng), axis=-1)
  return relaxed, first_argmax(relaxed)


def gumbel_softmax_parts(log_probs, tau, rng):
  """`gumbel_softmax`'s sample as its numerator and denominator, and its argmax.

  relaxed = weights / row_sums, the operations of `jax.nn.softmax` (weights = exp(x - max x),
  x = (log p + Gumbel) / tau; tokens the argmax of that quotient, the same bits). For a layer
  that maps the sample linearly (`DVAEDecoder`'s first, `PointwiseConv(..., row_sums)`): its
  backward pass then sums over the layer's outputs (64) where softmax's sums over the
  vocabulary (4096), and XLA:CPU no longer fuses the layer's input-gradient matmul into that
  reduction (where it ran at about a fifth of its speed alone).

  Returns:
    (weights [..., V] float32, row_sums [..., 1], tokens int32 [...]).
  """
  x = _perturbed(log_probs, tau, rng)
  weights = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, -1, keepdims=True, initial=-jnp.inf)))
  row_sums = jnp.sum(weights, -1, keepdims=True)
  return weights, row_sums, first_argmax(weights / row_sums)


def first_argmax(x):
  """`jnp.argmax(x, axis=-1)` as int32, computed as two reductions: the maximum, then the first
  index that holds it (the first NaN where there is one, as jnp.argmax).

  The same indices, ties and NaNs included. XLA:CPU runs jnp.argmax's (value, index) reduction as
  a scalar loop: 111 ms for the dVAE's [12, 32, 32, 4096] sample at MOVi-A B=4 on 2 cores, against
  32 ms for these two vectorised reductions (alone; the whole update by turns: faster in 5 of 10
  rounds, mean gain 0.02 s, within its 0.15 s standard error).
  """
  top = jnp.max(x, axis=-1, keepdims=True)  # NaN where x has a NaN
  hit = (x == top) | (jnp.isnan(x) & jnp.isnan(top))
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  return jnp.min(jnp.where(hit, index, x.shape[-1]), axis=-1)


class DVAEEncoder(nn.Module):
  """conv 4x4/4 VALID (ReLU), 5 x conv1x1 (ReLU), conv1x1 -> V (+ReLU, authors' code), log_softmax.

  Attributes:
    vocab_size: V.
    hidden: channels of the hidden convs (64).
    relu_before_log_softmax: the authors' ReLU on the vocabulary logits.
    dtype: compute dtype (log-probabilities are float32).
  """
  vocab_size: int
  hidden: int = 64
  relu_before_log_softmax: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, normalize: bool = True):
    # images: [B, H, W, 3] -> log_probs [B, H/4, W/4, V] (float32 logits if not normalize)
    x = relu(_conv(self.hidden, _PATCH, True, self.dtype, "patch", strides=_PATCH)(images))
    for i in range(5):
      x = relu(_conv(self.hidden, 1, True, self.dtype, f"conv_{i}")(x))  # [B, h, w, hidden]
    logits = _conv(self.vocab_size, 1, False, self.dtype, "vocab")(x)  # [B, h, w, V]
    if self.relu_before_log_softmax:
      logits = relu(logits)
    logits = logits.astype(jnp.float32)
    return jax.nn.log_softmax(logits, axis=-1) if normalize else logits


class DVAEDecoder(nn.Module):
  """(Relaxed) one-hot tokens [B, h, w, V] -> images [B, 4h, 4w, 3].

  conv1x1 V->hidden, then twice [conv3x3, 2 x conv1x1, conv1x1 -> 4*hidden, pixel-shuffle 2],
  then conv1x1 -> 3 (linear); every other conv is followed by a ReLU.
  """
  hidden: int = 64
  out_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, row_sums=None):
    """z: [B, h, w, V] -> [B, 4h, 4w, 3]; with row_sums [B, h, w, 1], the decoding of
    z / row_sums (`gumbel_softmax_parts`)."""
    conv = lambda ch, k, name, pad=0: _conv(ch, k, True, self.dtype, name, padding=pad)
    x = relu(conv(self.hidden, 1, "vocab")(z, row_sums))  # [B, h, w, hidden]
    for s in range(2):
      x = relu(conv(self.hidden, 3, f"conv3x3_{s}", pad=1)(x))
      for i in range(2):
        x = relu(conv(self.hidden, 1, f"conv_{s}_{i}")(x))
      x = relu(conv(4 * self.hidden, 1, f"expand_{s}")(x))  # [B, h', w', 4*hidden]
      x = pixel_shuffle(x, 2)  # [B, 2h', 2w', hidden]
    out = _conv(self.out_channels, 1, False, self.dtype, "out")(x)  # [B, 4h, 4w, 3]
    return out.astype(jnp.float32)


class DVAE(nn.Module):
  """Discrete VAE: `encoder` and `decoder` submodules (the "dVAE" optimiser group).

  Attributes:
    vocab_size: V (4096).
    hidden: hidden channels of encoder and decoder (64).
    relu_before_log_softmax: the authors' ReLU on the encoder's vocabulary logits.
    dtype: compute dtype.
  """
  vocab_size: int
  hidden: int = 64
  relu_before_log_softmax: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = DVAEEncoder(self.vocab_size, self.hidden, self.relu_before_log_softmax,
                               dtype=self.dtype)
    self.decoder = DVAEDecoder(self.hidden, dtype=self.dtype)

  def encode(self, images):
    """images: [B, H, W, 3] in [0, 1], H and W multiples of 4 -> log_probs [B, H/4, W/4, V]."""
    self._check_images(images)
    return self.encoder(images)

  def _check_images(self, images):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"DVAE expects images [B, H, W, 3], got shape {images.shape}")
    if images.shape[1] % _PATCH or images.shape[2] % _PATCH:
      raise ValueError(f"DVAE needs H and W divisible by {_PATCH}, got {images.shape[1:3]}")

  def decode(self, z):
    """Relaxed or one-hot tokens z: [B, h, w, V] -> images [B, 4h, 4w, 3] (unclipped)."""
    return self.decoder(z)

  def decode_tokens(self, tokens):
    """Hard tokens int [B, N], N = h*h square -> images [B, 4h, 4h, 3] (unclipped)."""
    b, n = tokens.shape
    side = int(round(n ** 0.5))
    if side * side != n:
      raise ValueError(f"decode_tokens needs a square token grid, got {n} tokens")
    one_hot = jax.nn.one_hot(tokens.reshape(b, side, side), self.vocab_size,
                             dtype=jnp.dtype(self.dtype))  # [B, h, h, V]
    return self.decoder(one_hot)

  def __call__(self, images, tau, rng):
    """Encode, sample relaxed tokens, reconstruct.

    Args:
      images: [B, H, W, 3] in [0, 1].
      tau: Gumbel-softmax temperature (scalar, may be traced).
      rng: PRNG key of the Gumbel noise.

    Returns:
      dict(recon [B, H, W, 3], mse [B] squared error summed over H, W, 3,
           tokens int32 [B, N] (N = H/4 * W/4, row-major) = argmax of the relaxed sample,
           log_probs [B, H/4, W/4, V]).
    """
    self._check_images(images)
    # The sample from the logits: the log-softmax's constant per token cancels in the sample's
    # softmax (`gumbel_softmax`), so training skips the log-softmax and its backward pass.
    # The decoder's first layer divides by the sample's row sums after its matmul
    # (`gumbel_softmax_parts`).
    logits = self.encoder(images, normalize=False)  # [B, h, w, V]
    # [B, h, w, V], [B, h, w, 1], [B, h, w]
    weights, row_sums, tokens = gumbel_softmax_parts(logits, tau, rng)
    recon = self.decoder(weights.astype(jnp.dtype(self.dtype)), row_sums)  # [B, H, W, 3]
    mse = jnp.sum(jnp.square(recon - images.astype(jnp.float32)), axis=(1, 2, 3))  # [B]
    b = images.shape[0]
    return dict(recon=recon, mse=mse, tokens=tokens.reshape(b, -1),
                log_probs=jax.nn.log_softmax(logits, axis=-1))
