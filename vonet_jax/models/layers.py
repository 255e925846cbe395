"""Dense layers and 1x1 convolutions computed as 2-D matmuls (exact; faster backward on CPU).

`Dense` is `nn.Dense` and `PointwiseConv` is `nn.Conv` with a 1x1 kernel and stride 1: the same
parameters (names, shapes, initialisation) and the same function. Both fold every leading axis
of the input into one before the matmul, [..., C_in] -> [N, C_in] -> [N, C_out] -> [..., C_out].
Why: XLA:CPU runs the backward pass of a matmul whose input has more than one leading axis
(e.g. [B, T, d] in the decoder, [B, h, w, C] in the dVAE) 2-5x slower than that of the same
matmul on 2-D operands (measured for the decoder's logits head, 192 -> 4096 on [12, 1024, 192]:
2.4 s against 0.75 s); see README "Performance". On a GPU the two are the same computation.
"""
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp


def _flat(x):
  return x.reshape((-1, x.shape[-1]))  # [..., C] -> [N, C]


class Dense(nn.Dense):
  """`nn.Dense` on the input folded to 2-D: [..., C_in] -> [..., features]."""

  def __call__(self, inputs):
    out = super().__call__(_flat(inputs))  # [N, features]
    return out.reshape(inputs.shape[:-1] + (self.features,))


class PointwiseConv(nn.Module):
  """`nn.Conv(features, (1, 1))` (stride 1, bias optional), as a matmul: [..., H, W, C_in] ->
  [..., H, W, features]. Parameters as nn.Conv's: kernel [1, 1, C_in, features], bias
  [features]."""
  features: int
  use_bias: bool = True
  dtype: Optional[Any] = None
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x, row_sums=None):
    """x: [..., C_in] -> [..., features]; with row_sums [..., 1], the layer of x / row_sums,
    computed as (x @ kernel) / row_sums + bias (the same to float rounding)."""
    kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jnp.dot(_flat(x), kernel[0, 0])  # [N, features]
    if row_sums is not None:
      y = y / _flat(row_sums).astype(y.dtype)
    if bias is not None:
      y = y + bias
    return y.reshape(x.shape[:-1] + (self.features,))


class ConvParams(nn.Module):
  """The parameters of an `nn.Conv` (kernel [*kernel_shape], optional bias [features]), same
  names and initialisation, for layers that compute their convolution another way; with a
  kernel shape [C_in, features], those of an `nn.Dense`."""
  kernel_shape: tuple
  use_bias: bool = True

  @nn.compact
  def __call__(self):
    """Returns (kernel, bias or None)."""
    kernel = self.param("kernel", nn.linear.default_kernel_init, self.kernel_shape)
    if not self.use_bias:
      return kernel, None
    return kernel, self.param("bias", nn.initializers.zeros_init(), (self.kernel_shape[-1],))
