"""ReLU, 2x2 max-pool, InstanceNorm and LayerNorm whose backward passes keep less from the
forward pass.

Each is the same function with the same gradients as its plain form (tests/test_lean_backward.py):
ReLU and max-pool bit for bit, the norms to float rounding. What changes is what XLA holds
from the forward pass until the backward pass (MOVi-A at B=8: README "Performance"):

- `relu` keeps where its output is positive as bits (1 bit per element) instead of its input.
  Its output is kept anyway wherever a matmul or convolution reads it, so its input (the FFN
  hidden pre-activations [B*T, N, 768] of every decoder block, the dVAE's vocabulary logits) is
  no longer kept. (Keeping the output instead is not enough: XLA then rewrites `y > 0` as
  `x > 0` and keeps x after all.) The whole U-Net (conv blocks and bottleneck MLP) keeps jax's
  ReLU (unet.py says why).
- `max_pool2` keeps its input and output (both kept anyway: the ReLU's output and the next
  convolution's input) and recomputes the location of each window's maximum in the backward
  pass, where jax's max reduction keeps that location as a float32 array of the input's size
  (92 MB per frame at B=8 for the U-Net's 64x64x64 level).
- `normalize` (`InstanceNorm`, `LayerNorm`) keeps its input and two numbers per normalised
  group (map and channel; token), and recomputes the normalised values in the backward pass,
  where autodiff of flax's GroupNorm keeps the centred and the normalised map as well, and of
  flax's LayerNorm three arrays of the input's size (the decoder's 3 norms per block, MOVi-A at
  B=8: 8 x 3 x 3 x 19 MB).

Recomputations in a backward pass are tied to the cotangent (`tie_floats_to`): XLA:CPU would
otherwise run them right after the forward pass and keep their results.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def tie_bits_to(bits, x):
  """Unsigned-integer `bits`, bit for bit, but computed from x.

  What is computed from the result cannot be scheduled before x exists (see `tie_key_to`). The
  bits are xor-ed with "x's first element is both NaN and infinite", which is never true but
  which XLA does not fold away. (An earlier form, "is NaN", flipped the bits when x[0] was NaN,
  which could let a NaN of a cotangent through where a ReLU's mask would have discarded it.)
  """
  first = jax.lax.stop_gradient(x.reshape(-1)[0])
  never = jnp.isnan(first) & jnp.isinf(first)
  return bits ^ never.astype(bits.dtype)


def tie_floats_to(x, anchor):
  """x, bit for bit, but computed from anchor (`tie_bits_to`)."""
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32 if x.dtype.itemsize == 4 else jnp.uint16)
  return jax.lax.bitcast_convert_type(tie_bits_to(bits, anchor), x.dtype)


def tie_key_to(key, x):
  """`key` itself, bit for bit, but computed from x (`tie_bits_to`).

  Random bits drawn from the result cannot be computed before x exists. Without such a tie XLA:CPU
  schedules everything that depends on the rng key alone (e.g. threefry's counters, two uint32
  arrays of the output's shape) at the start of the step and keeps it alive until used: with
  remat, the decoder's attention-dropout counters of all 8 blocks ([B, H, N, N] x 8 bytes each)
  and the dVAE's Gumbel noise were alive together. (`jax.lax.optimization_barrier` does not do
  this: XLA:CPU removes barriers before it schedules.)
  """
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  data = tie_bits_to(jax.random.key_data(key) if typed else key, x)
  return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key)) if typed else data


def pack_bits(keep):
  """bool [..., S] -> uint8 [..., ceil(S / 8)]: bit j of byte i is keep[..., 8 i + j]."""
  pad = -keep.shape[-1] % 8
  keep = jnp.pad(keep, [(0, 0)] * (keep.ndim - 1) + [(0, pad)]).astype(jnp.uint8)
  octets = keep.reshape(*keep.shape[:-1], -1, 8)  # [..., S/8, 8]
  return (octets << jnp.arange(8, dtype=jnp.uint8)).sum(-1, dtype=jnp.uint8)


def unpack_bits(packed, length: int):
  """uint8 [..., ceil(S / 8)] -> bool [..., S], the inverse of `pack_bits`."""
  bits = (packed[..., None] >> jnp.arange(8, dtype=jnp.uint8)) & 1  # [..., S/8, 8]
  return bits.reshape(*packed.shape[:-1], -1)[..., :length].astype(bool)


@jax.custom_vjp
def relu(x):
  """`jax.nn.relu` of x [..., C] (at least 1-D); its backward pass keeps where the output is
  positive as bits (`pack_bits` along the last axis)."""
  return jnp.maximum(x, 0)


def _relu_fwd(x):
  return relu(x), pack_bits(x > 0)  # [..., C/8] uint8


def _relu_bwd(bits, g):
  positive = unpack_bits(tie_bits_to(bits, g), g.shape[-1])  # [..., C]
  return (jnp.where(positive, g, jnp.zeros_like(g)),)


relu.defvjp(_relu_fwd, _relu_bwd)


def _windows(x):
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c)  # [N, h/2, 2, w/2, 2, C]


@jax.custom_vjp
def max_pool2(x):
  """2x2 max-pool, stride 2: [N, h, w, C] -> [N, h/2, w/2, C] (h, w even).

  The same values as `nn.max_pool(x, (2, 2), strides=(2, 2))`, as a max over a reshape: its
  gradient is elementwise, where reduce_window's gradient (select-and-scatter) becomes a scatter
  on XLA:CPU, with int32 index arrays of the input's size kept for the backward pass. The
  gradient is jax's for a max reduction: a window's gradient is split equally among tied
  maxima, where reduce_window gives it to one element; after the ReLU before every pool ties
  happen only at zeros, where the ReLU's gradient is zero anyway.

  The maximum is taken as three elementwise maxima of the window's four pixels, not as a
  reduction: XLA:CPU hands reductions to YNNPACK, whose fusion of the U-Net's InstanceNorm, ReLU
  and pool ran 2.5-3x slower than XLA's own elementwise loop (MOVi-A's [176, 64, 64, 64] maps of
  a collection step: 24 against 9 ms alone). A maximum is exact in any order: the same values.
  (The backward pass keeps its reduction for the counts of tied maxima: as elementwise adds, the
  compiled B=32 update needed 1.6 GB more.)
  """
  windows = _windows(x)  # [N, h/2, 2, w/2, 2, C]
  corner = lambda i, j: windows[:, :, i, :, j]  # [N, h/2, w/2, C]
  top = jnp.maximum(corner(0, 0), corner(0, 1))
  return jnp.maximum(top, jnp.maximum(corner(1, 0), corner(1, 1)))


def _max_pool2_fwd(x):
  y = max_pool2(x)
  return y, (x, y)


def _max_pool2_bwd(res, g):
  x, y = res  # [N, h, w, C], [N, h/2, w/2, C]
  # Tied to g: otherwise XLA:CPU computes the locations right after the forward pass and keeps
  # them (as float32, for the counts) until the backward pass reaches this pool.
  at_max = _windows(tie_floats_to(x, g)) == y[:, :, None, :, None]  # [N, h/2, 2, w/2, 2, C]
  counts = at_max.sum(axis=(2, 4), dtype=g.dtype)  # [N, h/2, w/2, C]
  share = (g / counts)[:, :, None, :, None]
  return (jnp.where(at_max, share, jnp.zeros_like(share)).reshape(x.shape),)


max_pool2.defvjp(_max_pool2_fwd, _max_pool2_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize(x, scale, bias, eps: float, axes: tuple):
  """Normalisation over `axes` of x [..., C], then scale and bias [C]: the same shape.

  flax's normalisation layers: statistics in float32, variance E[x^2] - E[x]^2 clipped at 0,
  y = (x - mean) * (rsqrt(var + eps) * scale) + bias. axes (1, 2) of [N, h, w, C] is flax's
  `GroupNorm(group_size=1)` (`InstanceNorm`); axes (-1,) is flax's `LayerNorm`.
  """
  return _normalize_fwd(x, scale, bias, eps, axes)[0]


def _stats(x, eps, axes):
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = xf.mean(axis=axes, keepdims=True)  # [N, 1, 1, C] (instance), [..., 1] (layer)
  var = jnp.maximum(0.0, (xf * xf).mean(axis=axes, keepdims=True) - mean * mean)
  return mean, jax.lax.rsqrt(var + eps)


def _affine(x, mean, rstd, scale, bias):
  """The normalised x, scaled and shifted, in x's dtype (statistics in float32)."""
  return ((x.astype(rstd.dtype) - mean) * (rstd * scale) + bias).astype(x.dtype)


def _normalize_fwd(x, scale, bias, eps, axes):
  mean, rstd = _stats(x, eps, axes)
  return _affine(x, mean, rstd, scale, bias), (x, mean, rstd, scale)


def _normalize_bwd(eps, axes, res, g):
  del eps
  x, mean, rstd, scale = res
  # All tied to g: XLA:CPU would otherwise broadcast mean, rstd and scale to x's shape (or
  # recompute the normalised x) right after the forward pass and keep the results.
  x, mean, rstd, scale = (tie_floats_to(a, g) for a in (x, mean, rstd, scale))
  xf = x.astype(rstd.dtype)
  x_hat = (xf - mean) * rstd
  gf = g.astype(rstd.dtype)
  d_hat = gf * scale
  dx = rstd * (d_hat - d_hat.mean(axis=axes, keepdims=True)
               - x_hat * (d_hat * x_hat).mean(axis=axes, keepdims=True))
  leading = tuple(range(x.ndim - 1))  # scale and bias are per channel (the last axis)
  return (dx.astype(x.dtype), (gf * x_hat).sum(axis=leading).astype(scale.dtype),
          gf.sum(axis=leading).astype(scale.dtype))


normalize.defvjp(_normalize_fwd, _normalize_bwd)


class _ChannelNorm(nn.Module):
  """`normalize` over `axes` with per-channel parameters "scale" and "bias" (flax's names and
  initialisation): [..., C] -> [..., C] in `dtype`, statistics in float32."""
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  axes: tuple = (-1,)

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    return normalize(x.astype(self.dtype), scale, bias, self.epsilon, self.axes)


class InstanceNorm(_ChannelNorm):
  """`nn.GroupNorm(num_groups=None, group_size=1)`: [N, h, w, C] -> [N, h, w, C]."""
  axes: tuple = (1, 2)


class LayerNorm(_ChannelNorm):
  """`nn.LayerNorm` over the last axis: [..., C] -> [..., C]."""
  axes: tuple = (-1,)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def normalize_project(x, scale, bias, kernels, eps: float):
  """LayerNorm of x [..., d] over its last axis (`normalize`), then bias-free projections:
  a tuple of LN(x) @ kernel for each kernel [d, out] ([..., out] each, in x's dtype).

  The same function and gradients as the norm followed by `layers.Dense` layers (to float
  rounding), but its backward pass recomputes LN(x) from x, which the norm keeps anyway, where
  the projections' autodiff keeps LN(x) as well (MOVi-A at B=8: 3 x 19 MB per decoder block).
  """
  return _normalize_project_fwd(x, scale, bias, kernels, eps)[0]


def _project(y, kernels):
  flat = y.reshape(-1, y.shape[-1])  # [N, d], as layers.Dense folds the leading axes
  return tuple(jnp.dot(flat, k.astype(y.dtype)).reshape(y.shape[:-1] + (k.shape[-1],))
               for k in kernels)


def _normalize_project_fwd(x, scale, bias, kernels, eps):
  y, norm_residuals = _normalize_fwd(x, scale, bias, eps, (-1,))
  return _project(y, kernels), (norm_residuals, bias, kernels)


def _normalize_project_bwd(eps, residuals, gs):
  norm_residuals, bias, kernels = residuals
  x, mean, rstd, scale = norm_residuals
  # LN(x) recomputed from tied inputs (see `tie_bits_to`): else XLA:CPU shares it with the
  # forward's and keeps it.
  anchor = gs[0]
  y = _affine(*(tie_floats_to(a, anchor) for a in (x, mean, rstd, scale)), bias)
  flat_y = y.reshape(-1, y.shape[-1])  # [N, d]
  dy = jnp.zeros_like(flat_y)
  dkernels = []
  for k, g in zip(kernels, gs):
    flat_g = g.reshape(-1, g.shape[-1])  # [N, out]
    dkernels.append(jnp.dot(flat_y.T, flat_g).astype(k.dtype))
    dy = dy + jnp.dot(flat_g, k.astype(g.dtype).T)
  dx, dscale, dbias = _normalize_bwd(eps, (-1,), norm_residuals, dy.reshape(y.shape))
  return dx, dscale, dbias, tuple(dkernels)


normalize_project.defvjp(_normalize_project_fwd, _normalize_project_bwd)
