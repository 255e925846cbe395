"""An array that XLA:CPU computes once into memory, where it would recompute it in each consumer.

XLA fuses a chain of cheap elementwise operations (the sum of a convolution's parts, InstanceNorm's
affine map, a ReLU) into every consumer that reads it, duplicating the chain, as long as no
operation of it counts as expensive. In the U-Net's first block that was costly: at MOVi-A B=4
the transposed copy of the block's output that the next convolution's kernel gradient reads
recomputed the whole block from its four input parts, each read with the transpose's stride
(0.08-0.15 s per frame, where transposing the stored output takes about 0.03 s), and the block's
convolution output was recomputed in nine fusions per frame (forward statistics, output, and the
backward pass's InstanceNorm gradient, each of its consumers again).

`materialize(x)` returns x divided by ones that XLA cannot fold: a float division counts as
expensive, and XLA does not duplicate an expensive operation into several consumers, so x is
written once and read by all. x / 1 is x bit for bit (NaN, infinities and -0 included), and the
backward pass passes the cotangent through as autodiff of the identity does; with `cotangent=True`
the cotangent is materialised the same way. (`jax.lax.optimization_barrier` does not do this:
XLA:CPU removes barriers before it fuses. The ones are elementwise, computed from x, because XLA
rewrites a division by a broadcast scalar as a multiplication by its reciprocal, which is cheap.)

Used on the U-Net's first block (`unet.UNet`): its convolution output with its cotangent, and its
output. By turns, MOVi-A B=4 (`experiments/compare_revisions.py`, 12 rounds each): the output
alone faster in 8 of 12 rounds (mean 0.40 s, standard error 0.12 s), the convolution output and
its cotangent on top faster in 10 of 12 (medians 9.85 against 10.12 s). Tried and left out, no
gain by turns: the up blocks' phase-convolution cotangent (`upsampled_conv`, 5 of 12), the up
blocks' convolution outputs (sums of two parts, as the first block's) with their cotangents (4 of
10, mean 0.37 s slower), the other blocks' convolution cotangents alone (the U-Net part 6 of 12).

Used on every later down block's max-pooled output, which the transposed copy for the next
convolution's kernel gradient had recomputed from the block's full-size convolution output
(InstanceNorm, ReLU and pool again, 55 ms per frame at the second level): the U-Net part by turns
faster in 12 of 12 rounds (mean 0.24 s, standard error 0.01 s), the whole update in 10 of 12
(mean 0.08 s, standard error 0.08 s), the collection level (6 of 16), B=32 compiled 28.13 ->
28.44 GB.

Used on each backbone block's output in training (`backbone.ResNetBlock`), whose transposed
copies for the kernel gradients had recomputed the residual chain back through every earlier
block: the backbone part by turns faster in 11 of 12 rounds (mean 0.25 s, standard error 0.03 s),
the whole update in 10 of 12 (mean 0.37 s, standard error 0.12 s), B=32 memory unchanged. (An
earlier try, on the whole update alone, had seen 4 of 12 rounds.) Inference (the collection)
keeps the plain forward: there it was level (10 of 16 rounds, mean -0.08 s, standard error 0.08).

Used too on the decoder's self-attention q, k and v laid out heads first
(`transformer.causal_dropout_attention`), whose transpose XLA had fused into each query block's
slice of them, forward and backward: the decoder part by turns faster in 10 of 10 rounds (mean
0.29 s); the whole update 5 of 12 rounds in a noisy window (mean 0.02 s, standard error 0.32),
then against its revert 8 of 12 (mean 0.18 s, standard error 0.09).
"""
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def materialize(x, cotangent: bool = False):
  """x, bit for bit, computed into memory once (module docstring); with `cotangent`, its
  cotangent in the backward pass too."""
  return x / _runtime_one(x)


def _runtime_one(x):
  """Ones of x's shape and dtype, which XLA cannot fold: 2 where an element of x is both NaN and
  infinite (never), else 1. Elementwise, not a broadcast scalar: XLA rewrites a division by a
  broadcast as a multiplication by its reciprocal, which is cheap again."""
  never = jnp.isnan(x) & jnp.isinf(x)
  return jnp.where(never, jnp.asarray(2, x.dtype), jnp.asarray(1, x.dtype))


def _materialize_fwd(x, cotangent):
  return materialize(x), None


def _materialize_bwd(cotangent, _, g):
  return (materialize(g) if cotangent else g,)


materialize.defvjp(_materialize_fwd, _materialize_bwd)
