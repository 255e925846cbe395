"""The U-Net's input maps, F + conv3x3([m, log m]) + conv3x3(broadcast c_k) (SPEC.md section 2),
built (`UNetInput(fused=False)`) or kept as their parts (`fused=True`, `FusedUNetInput`).

The input of slot k is one [h, w, C] map per (frame, slot), and the U-Net's first layer is a
3x3 convolution of it (no bias): a linear function of the map. Fused, that convolution is
computed from the parts, without the [B, K, h, w, C] maps (as the closed-form broadcast conv
of SPEC.md section 8, carried through the first layer):
- the feature map F is the same for every slot: its convolution is computed once per frame
  ([B, h, w, C] instead of [B*K, h, w, C]);
- the mask term conv3x3(conv3x3([m, log m]) + bias) is one 3x3 convolution from the 18 channels
  of a 3x3 patch of [m, log m], zero outside the map (the inner convolution's output is
  zero-padded), with the composite kernel of the two convolutions;
- the context term and the biases are constant inside the map and fall off at its border: their
  convolution is a sum over the 9 x 9 pairs of taps weighted by separable row and column
  indicators of which taps land inside the map.
The same function as the plain path in exact arithmetic (float32 results differ by rounding;
the tests compare them), about a quarter of the first layer's FLOPs at MOVi sizes, and none of
the C-channel per-slot maps in memory. Shapes: B frames, K slots, N = B*K, C = F's channels.
"""
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from vonet_jax.models import winograd as winograd_lib
from vonet_jax.models.layers import ConvParams
from vonet_jax.models.short_broadcast import repeat

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, padding):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


def _inside(size: int, dtype=bool) -> jnp.ndarray:
  """[size, 3]: whether position i + a - 1 (a = kernel tap) lies within [0, size)."""
  pos = jnp.arange(size)[:, None] + jnp.arange(3)[None, :] - 1
  return ((pos >= 0) & (pos < size)).astype(dtype)


def _inside_twice(size: int, dtype) -> jnp.ndarray:
  """[size, 3, 3] (i, a, b): positions i + b - 1 and i + b - 1 + a - 1 both lie inside."""
  outer = _inside(size, dtype)  # [size, 3] (i, b)
  pos = jnp.arange(size)[:, None, None] + jnp.arange(3)[None, None, :] - 1  # [size, 1, 3]
  inner = pos + jnp.arange(3)[None, :, None] - 1  # [size, 3, 3] (i, a, b)
  return ((inner >= 0) & (inner < size)).astype(dtype) * outer[:, None, :]


def _conv_of_constant(c, kernel, height: int, width: int):
  """The zero-padded 3x3 conv (no bias) of the constant maps c [N, C_in] broadcast to
  [height, width], in closed form: kernel [3, 3, C_in, O] -> [N, height, width, O]. Each output
  pixel sums the taps c @ kernel[a, b] that land inside the map."""
  taps = jnp.einsum("nc,abcd->nabd", c, kernel)  # [N, 3, 3, O]
  y = jnp.einsum("ia,nabd->nibd", _inside(height, c.dtype), taps)  # [N, h, 3, O]
  return jnp.einsum("jb,nibd->nijd", _inside(width, c.dtype), y)  # [N, h, w, O]


def _composite_taps(mask_kernel, kernel):
  """[3 (d), 3 (e), 3 (a), 3 (b), C_m, O]: outer tap (d, e) of `kernel` after inner tap (a, b) of
  `mask_kernel` ([3, 3, C_m, C] and [3, 3, C, O])."""
  return jnp.einsum("abic,deco->deabio", mask_kernel, kernel)


def _mask_term_window(mask_in_padded, taps, size, rows, cols):
  """The mask term (`mask_term`) on the window rows [r0, r1) x cols [c0, c1) of the map, from 3x3
  patches of [m, log m] on the window grown by one pixel, zeroed outside the map (the inner
  conv's zero padding), and a valid 3x3 conv with the composite kernel.

  Args:
    mask_in_padded: [N, h + 4, w + 4, C_m], [m, log m] zero-padded by 2.
    taps: `_composite_taps`.
    size: (h, w) of the map.
    rows, cols: (r0, r1), (c0, c1).

  Returns:
    [N, r1 - r0, c1 - c0, O].
  """
  (r0, r1), (c0, c1) = rows, cols
  patches = jnp.concatenate([mask_in_padded[:, r0 + a:r1 + 2 + a, c0 + b:c1 + 2 + b]
                             for a in range(3) for b in range(3)], axis=-1)  # [N, ., ., 9 C_m]
  inside = [(jnp.arange(lo - 1, hi + 1) >= 0) & (jnp.arange(lo - 1, hi + 1) < n)
            for (lo, hi), n in zip((rows, cols), size)]
  patches = patches * (inside[0][:, None] & inside[1][None, :]).astype(patches.dtype)[..., None]
  composite = taps.reshape(3, 3, -1, taps.shape[-1])  # [3, 3, 9 C_m, O]
  return _conv(patches, composite, "VALID")


def _mask_term_by_patches(mask_in, mask_kernel, kernel):
  """`mask_term` over the whole map by 3x3 patches (`_mask_term_window`): 162 multiply-adds per
  pixel and output channel (C_m = 2), and a backward pass that XLA:CPU runs fast."""
  _, h, w, _ = mask_in.shape
  padded = jnp.pad(mask_in, ((0, 0), (2, 2), (2, 2), (0, 0)))
  return _mask_term_window(padded, _composite_taps(mask_kernel, kernel), (h, w), (0, h), (0, w))


def _mask_term_5x5(mask_in, mask_kernel, kernel):
  """`mask_term` as one 5x5 conv (50 multiply-adds per pixel and output channel) inside the map
  and by patches on its one-pixel border, where the inner conv's zero padding differs from the
  composite conv's."""
  _, h, w, _ = mask_in.shape
  if min(h, w) < 3:
    return _mask_term_by_patches(mask_in, mask_kernel, kernel)
  taps = _composite_taps(mask_kernel, kernel)  # outer tap (d, e) after inner (a, b): 5x5 tap
  five = sum(jnp.pad(taps[d, e], ((d, 2 - d), (e, 2 - e), (0, 0), (0, 0)))  # (d + a, e + b)
             for d in range(3) for e in range(3))  # [5, 5, C_m, O]
  inner = _conv(jnp.pad(mask_in, ((0, 0), (1, 1), (1, 1), (0, 0))), five, "VALID")
  padded = jnp.pad(mask_in, ((0, 0), (2, 2), (2, 2), (0, 0)))
  window = lambda rows, cols: _mask_term_window(padded, taps, (h, w), rows, cols)
  middle = jnp.concatenate([window((1, h - 1), (0, 1)), inner, window((1, h - 1), (w - 1, w))],
                           axis=2)  # rows 1 .. h-2
  return jnp.concatenate([window((0, 1), (0, w)), middle, window((h - 1, h), (0, w))], axis=1)


@jax.custom_vjp
def mask_term(mask_in, mask_kernel, kernel):
  """The 3x3 conv (no bias) with `kernel` of the zero-padded 3x3 conv (no bias) with
  `mask_kernel` of [m, log m]: the U-Net's first layer on the mask term of its input.

  Composed, the two convolutions are one 5x5 convolution of [m, log m], except on the map's
  one-pixel border, where the outer conv reads the inner conv's zero padding. Evaluated alone
  (replay collection, evaluation) it is computed so (`_mask_term_5x5`: 73 -> 47 ms for the
  collection's 176 MOVi-A maps on 2 cores); under differentiation by 3x3 patches
  (`_mask_term_by_patches`), whose backward pass XLA:CPU runs faster than the 5x5 conv's (174
  against 190 ms). The same function in exact arithmetic (float32 results differ by rounding;
  tests/test_unet_input.py).

  Args:
    mask_in: [N, h, w, C_m], [m, log m].
    mask_kernel: [3, 3, C_m, C].
    kernel: [3, 3, C, O].

  Returns:
    [N, h, w, O].
  """
  return _mask_term_5x5(mask_in, mask_kernel, kernel)


def _mask_term_fwd(mask_in, mask_kernel, kernel):
  return jax.vjp(_mask_term_by_patches, mask_in, mask_kernel, kernel)


def _mask_term_bwd(pullback, g):
  return pullback(g)


mask_term.defvjp(_mask_term_fwd, _mask_term_bwd)


class BroadcastConv(nn.Module):
  """3x3 zero-padded conv of a spatially constant map, c [N, C_in] -> [N, h, w, features].

  method="plain" runs the convolution on the broadcast map (about 1.2 GFLOP per slot and frame
  at MOVi sizes). method="closed_form" gives the same numbers from the 9 per-tap projections
  c @ W[a, b]: output(i, j) = bias + sum of the taps that land inside the map, so the interior
  is one constant and only the one-pixel border differs.
  """
  features: int
  height: int
  width: int
  method: str = "closed_form"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, c):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, c.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    c, kernel = c.astype(self.dtype), kernel.astype(self.dtype)
    if self.method == "plain":
      x = jnp.broadcast_to(c[:, None, None, :], (c.shape[0], self.height, self.width, c.shape[-1]))
      return _conv(x, kernel, ((1, 1), (1, 1))) + bias.astype(self.dtype)
    if self.method != "closed_form":
      raise ValueError(f"unknown broadcast_conv method {self.method!r}")
    return _conv_of_constant(c, kernel, self.height, self.width) + bias.astype(self.dtype)


@flax.struct.dataclass
class FusedUNetInput:
  """The U-Net input maps F + mask term + context term as their parts (module docstring).

  Attributes:
    features: F [B, h, w, C].
    mask_in: [m, log m] [N, h, w, 2].
    context: c_k [N, C_in].
    mask_kernel, mask_bias: the mask conv, [3, 3, 2, C] and [C].
    context_kernel, context_bias: the context conv, [3, 3, C_in, C] and [C].
    num_slots: K.
  """
  features: jnp.ndarray
  mask_in: jnp.ndarray
  context: jnp.ndarray
  mask_kernel: jnp.ndarray
  mask_bias: jnp.ndarray
  context_kernel: jnp.ndarray
  context_bias: jnp.ndarray
  num_slots: int = flax.struct.field(pytree_node=False)

  @property
  def shape(self):
    """The shape of the maps these parts make, [B, K, h, w, C]."""
    b, h, w, c = self.features.shape
    return b, self.num_slots, h, w, c

  def conv3x3(self, kernel, winograd: bool = False):
    """The zero-padded 3x3 convolution (no bias) of the maps: kernel [3, 3, C, O] -> [N, h, w, O];
    with `winograd`, F's convolution by `winograd.conv3x3` (Winograd's algorithm where it is not
    differentiated).
    """
    b, h, w, _ = self.features.shape
    dtype = kernel.dtype
    # F, once per frame: [B, h, w, O].
    features = self.features.astype(dtype)
    features = (winograd_lib.conv3x3(features, kernel) if winograd
                else _conv(features, kernel, ((1, 1), (1, 1))))
    masks = mask_term(self.mask_in.astype(dtype), self.mask_kernel.astype(dtype), kernel)
    # Context term: tap pairs (a = the context conv's, b = this conv's) weighted by whether
    # both taps land inside, separably over rows and columns.
    taps = jnp.einsum("ni,acix->nacx", self.context.astype(dtype),
                      self.context_kernel.astype(dtype))  # [N, 3, 3, C]
    pairs = jnp.einsum("nacx,bdxo->nacbdo", taps, kernel)  # [N, 3, 3, 3, 3, O]
    context = jnp.einsum("iab,nacbdo->nicdo", _inside_twice(h, dtype), pairs)  # [N, h, 3, 3, O]
    context = jnp.einsum("jcd,nicdo->nijo", _inside_twice(w, dtype), context)  # [N, h, w, O]
    # Both biases: one constant map, the same for every slot.
    bias = (self.mask_bias + self.context_bias).astype(dtype)[None]  # [1, C]
    bias = _conv_of_constant(bias, kernel, h, w)  # [1, h, w, O]
    # Both repeated by `short_broadcast.repeat`: their gradients are sums over the N maps and
    # the K slots, short axes that XLA:CPU's library reduction sums slowly.
    per_slot = (masks + context + repeat(bias, masks.shape[0], 0)).reshape(
        (b, self.num_slots, h, w, -1))
    return (repeat(features[:, None], self.num_slots, 1) + per_slot).reshape(masks.shape)


def unet_input_from_config(cfg, dtype: Any = jnp.float32, name: str = "unet_input"):
  """The `UNetInput` that config.model `cfg` asks for (`broadcast_conv`, `unet_input`)."""
  return UNetInput(cfg.broadcast_conv, cfg.unet_input == "fused", dtype, name=name)


class UNetInput(nn.Module):
  """F + conv3x3([m, log m]) + conv3x3(broadcast c_k): one [h, w, C] map per (frame, slot).

  Args of __call__: features [B, h, w, C], masks and log_masks [B, K, h, w], context [B, K, C].
  Returns [B, K, h, w, C], or with `fused` the same maps as a `FusedUNetInput`.
  """
  broadcast_conv: str = "closed_form"
  fused: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, masks, log_masks, context):
    b, h, w, c = features.shape
    k = masks.shape[1]
    mask_in = jnp.stack([masks, log_masks], axis=-1).reshape(b * k, h, w, 2)
    context = context.reshape(b * k, -1)
    if self.fused:
      mask_kernel, mask_bias = ConvParams((3, 3, 2, c), name="mask_conv")()
      context_kernel, context_bias = ConvParams((3, 3, context.shape[-1], c),
                                                name="context_conv")()
      return FusedUNetInput(features, mask_in, context, mask_kernel, mask_bias, context_kernel,
                            context_bias, num_slots=k)
    mask_term = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                        name="mask_conv")(mask_in)  # [B*K, h, w, C]
    context_term = BroadcastConv(c, h, w, method=self.broadcast_conv, dtype=self.dtype,
                                 name="context_conv")(context)
    x = (mask_term + context_term).reshape(b, k, h, w, c)
    return features[:, None].astype(x.dtype) + x
