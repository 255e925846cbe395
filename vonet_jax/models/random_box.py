"""A box of a Bernoulli draw without drawing the rest: the causal decoder's blocked dropout.

`bernoulli_box(key, p, shape, start, size)` equals `jax.random.bernoulli(key, p, shape)` cut to the
box `[start, start + size)`, bit for bit, for threefry keys (jax's default) under jax's default
`jax_threefry_partitionable=True`, where the random bits of an element are threefry-2x32 of the
key and the element's row-major index in `shape`. Only the box's elements are hashed, so the
causal decoder attention can draw the dropout mask of its unmasked blocks alone
(`transformer.causal_dropout_attention`) and still apply the plain path's mask. The test
compares it with the sliced full draw; a jax release that draws differently fails that test.

Other key implementations (the `rbg` keys of `train.bulk_rng=rbg`, whose numbers differ from the
plain path's anyway) get an independent draw of the box from `fold_in(key, box index)`: the same
distribution, other numbers.
"""
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

_FLOAT32_ONE_BITS = np.array(1.0, np.float32).view(np.uint32)


def _is_partitionable_threefry(key) -> bool:
  if not jax.config.jax_threefry_partitionable:
    return False
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return str(jax.random.key_impl(key)) == "threefry2x32"
  return key.shape == (2,) and key.dtype == jnp.uint32  # raw keys are threefry by default


def _row_major_index(shape: Sequence[int], start: Sequence[int], size: Sequence[int]):
  """uint32 [*size]: the row-major index in `shape` of each element of the box."""
  index = jnp.zeros(size, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    position = jax.lax.broadcasted_iota(jnp.uint32, tuple(size), axis) + np.uint32(start[axis])
    index = index + position * np.uint32(stride)
    stride *= shape[axis]
  return index


def bernoulli_box(key, p: float, shape: Sequence[int], start: Sequence[int],
                  size: Sequence[int]):
  """`jax.random.bernoulli(key, p, shape)[start[0]:start[0] + size[0], ...]`, drawing the box only.

  Args:
    key: a jax PRNG key, typed or raw.
    p: probability of True.
    shape: the shape of the full draw.
    start, size: the box, one entry per axis of `shape`.

  Returns:
    bool [*size]; for threefry keys bit-identical to the box of the full draw (module docstring).
  """
  shape, start, size = tuple(shape), tuple(start), tuple(size)
  if not len(shape) == len(start) == len(size):
    raise ValueError(f"box start {start} / size {size} do not match the shape {shape}")
  if any(s < 0 or s + n > d for s, n, d in zip(start, size, shape)):
    raise ValueError(f"box start {start} size {size} is not inside the shape {shape}")
  if not _is_partitionable_threefry(key):
    box_index = int(np.ravel_multi_index(start, shape)) if math.prod(shape) else 0
    return jax.random.bernoulli(jax.random.fold_in(key, box_index), p, size)
  if math.prod(shape) >= 2 ** 32:
    raise ValueError(f"bernoulli_box supports draws of fewer than 2**32 elements, got {shape}")
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  index = _row_major_index(shape, start, size)
  # jax's partitionable threefry bits: counts (high word, low word) = (0, index), bits1 ^ bits2.
  bits1, bits2 = threefry2x32_p.bind(data[0], data[1], jnp.zeros_like(index), index)
  # jax.random.uniform's float32: 23 random mantissa bits with exponent 0, minus 1, in [0, 1).
  mantissa = jax.lax.shift_right_logical(bits1 ^ bits2, np.uint32(9))
  uniform = jax.lax.bitcast_convert_type(mantissa | _FLOAT32_ONE_BITS, jnp.float32) - 1.0
  return uniform < jnp.float32(p)
