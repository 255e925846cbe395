"""Threefry random numbers of jax's own draws, faster on CPU: Bernoulli boxes and Gumbel noise.

`bernoulli_box(key, p, shape, start, size)` equals `jax.random.bernoulli(key, p, shape)` cut to the
box `[start, start + size)` (optionally transposed, drawn in that order), bit for bit, for
threefry keys (jax's default) under jax's default `jax_threefry_partitionable=True`, where the
random bits of an element are threefry-2x32 of the key and the element's row-major index in
`shape`. Only the box's elements are hashed, so the causal decoder attention can draw the
dropout mask of its unmasked blocks alone (`transformer.causal_dropout_attention`) and still
apply the plain path's mask. `gumbel(key, shape)` equals `jax.random.gumbel(key, shape,
float32)` bit for bit (the dVAE's Gumbel noise), `bernoulli(key, p, shape)`
`jax.random.bernoulli` (the decoder's other dropout masks).

All three hash with `threefry2x32`, an unrolled copy of jax's threefry primitive, which XLA:CPU fuses
with the comparison or the logarithms that use the bits (jax's CPU lowering is a loop that
writes its state to memory each step). The tests compare each function with jax's own draw; a
jax release that draws differently fails them.

Other key implementations (the `rbg` keys of `train.bulk_rng=rbg`, whose numbers differ from the
plain path's anyway) get jax's own draws: for a box an independent draw from `fold_in(key, box
index)`, the same distribution, other numbers.
"""
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_FLOAT32_ONE_BITS = np.array(1.0, np.float32).view(np.uint32)


# Threefry-2x32 with 20 rounds (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2,
# 3"): rotation constants of rounds 0-3 and 4-7, and the key-schedule parity constant.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(key1, key2, count1, count2):
  """Threefry-2x32 of the counter pairs (count1, count2) under the key (key1, key2), unrolled.

  The same integer function as jax's `threefry2x32_p` (tested bit for bit), written out as 20
  rounds of elementwise uint32 operations. On CPU jax lowers that primitive to a 5-step loop
  (short compile), which XLA cannot fuse with what uses the bits: each step writes two uint32
  arrays of the output's shape. Unrolled, the hash and its consumer (e.g. the comparison of a
  Bernoulli draw) become one fused loop, about 3x faster for the decoder's dropout masks.

  Args:
    key1, key2: uint32 scalars.
    count1, count2: uint32 arrays of one shape.

  Returns:
    (bits1, bits2), uint32 arrays of count1's shape.
  """
  keys = (key1, key2, key1 ^ key2 ^ _KEY_PARITY)
  x0, x1 = count1 + keys[0], count2 + keys[1]
  for step in range(5):
    for rotation in _ROTATIONS[step % 2]:
      x0 = x0 + x1
      x1 = (x1 << np.uint32(rotation)) | jax.lax.shift_right_logical(x1, np.uint32(32 - rotation))
      x1 = x0 ^ x1
    x0 = x0 + keys[(step + 1) % 3]
    x1 = x1 + keys[(step + 2) % 3] + np.uint32(step + 1)
  return x0, x1


def _is_partitionable_threefry(key) -> bool:
  if not jax.config.jax_threefry_partitionable:
    return False
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return str(jax.random.key_impl(key)) == "threefry2x32"
  return key.shape == (2,) and key.dtype == jnp.uint32  # raw keys are threefry by default


def _row_major_index(shape: Sequence[int], start: Sequence[int], size: Sequence[int],
                     axes: Sequence[int]):
  """uint32 [size[axes[0]], size[axes[1]], ...]: the row-major index in `shape` of each element of
  the box, the box's axes in the order `axes` (as `jnp.transpose`)."""
  out_size = tuple(size[axis] for axis in axes)
  index = jnp.zeros(out_size, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    position = (jax.lax.broadcasted_iota(jnp.uint32, out_size, axes.index(axis))
                + np.uint32(start[axis]))
    index = index + position * np.uint32(stride)
    stride *= shape[axis]
  return index


def bernoulli_box(key, p: float, shape: Sequence[int], start: Sequence[int],
                  size: Sequence[int], axes: Optional[Sequence[int]] = None):
  """`jax.random.bernoulli(key, p, shape)[start[0]:start[0] + size[0], ...]`, drawing the box only,
  and `.transpose(axes)` if `axes` is given (drawn in that order: no transposed copy).

  Args:
    key: a jax PRNG key, typed or raw.
    p: probability of True.
    shape: the shape of the full draw.
    start, size: the box, one entry per axis of `shape`.
    axes: optional permutation of the box's axes, as `jnp.transpose`'s.

  Returns:
    bool [*size], or [size[axes[0]], ...]; for threefry keys bit-identical to the box of the full
    draw (module docstring).
  """
  shape, start, size = tuple(shape), tuple(start), tuple(size)
  axes = tuple(range(len(shape))) if axes is None else tuple(axes)
  if not len(shape) == len(start) == len(size):
    raise ValueError(f"box start {start} / size {size} do not match the shape {shape}")
  if any(s < 0 or s + n > d for s, n, d in zip(start, size, shape)):
    raise ValueError(f"box start {start} size {size} is not inside the shape {shape}")
  if sorted(axes) != list(range(len(shape))):
    raise ValueError(f"box axes {axes} are not a permutation of the {len(shape)} axes")
  if not _is_partitionable_threefry(key):
    box_index = int(np.ravel_multi_index(start, shape)) if math.prod(shape) else 0
    return jax.random.bernoulli(jax.random.fold_in(key, box_index), p, size).transpose(axes)
  return _uniform_box(key, shape, start, size, axes) < jnp.float32(p)


def bernoulli(key, p: float, shape: Sequence[int]):
  """`jax.random.bernoulli(key, p, shape)`, bit for bit (threefry keys hashed by `threefry2x32`)."""
  shape = tuple(shape)
  if not _is_partitionable_threefry(key) or math.prod(shape) >= 2 ** 32:
    return jax.random.bernoulli(key, p, shape)
  return _uniform_box(key, shape, (0,) * len(shape), shape) < jnp.float32(p)


def gumbel(key, shape: Sequence[int]):
  """`jax.random.gumbel(key, shape, jnp.float32)`, bit for bit, hashed by `threefry2x32`.

  Falls back to jax's own draw for non-threefry keys, for jax's "high" dynamic-range mode and for
  draws of 2**32 elements or more.

  Returns:
    float32 [*shape].
  """
  shape = tuple(shape)
  if (not _is_partitionable_threefry(key) or jax.config.jax_high_dynamic_range_gumbel
      or math.prod(shape) >= 2 ** 32):
    return jax.random.gumbel(key, shape, jnp.float32)
  uniform = _uniform_box(key, shape, (0,) * len(shape), shape)  # [0, 1)
  # jax.random.uniform(minval=tiny, maxval=1): floats * (1 - tiny) + tiny, at least tiny.
  tiny = np.float32(np.finfo(np.float32).tiny)
  uniform = jnp.maximum(tiny, uniform * (np.float32(1.0) - tiny) + tiny)
  return -jnp.log(-jnp.log(uniform))


def _uniform_box(key, shape, start, size, axes=None):
  """float32 [*size] in [0, 1): the box of `jax.random.uniform(key, shape)`'s floats (threefry),
  its axes in the order `axes` (default: as `shape`'s)."""
  if math.prod(shape) >= 2 ** 32:
    raise ValueError(f"random_box supports draws of fewer than 2**32 elements, got {shape}")
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  axes = tuple(range(len(shape))) if axes is None else tuple(axes)
  index = _row_major_index(shape, start, size, axes)
  # jax's partitionable threefry bits: counts (high word, low word) = (0, index), bits1 ^ bits2.
  bits1, bits2 = threefry2x32(data[0], data[1], jnp.zeros_like(index), index)
  # jax.random.uniform's float32: 23 random mantissa bits with exponent 0, minus 1, in [0, 1).
  mantissa = jax.lax.shift_right_logical(bits1 ^ bits2, np.uint32(9))
  return jax.lax.bitcast_convert_type(mantissa | _FLOAT32_ONE_BITS, jnp.float32) - 1.0
