"""The U-Net's 3x3 convolution, with a kernel gradient that XLA:CPU computes faster.

`conv3x3(x, kernel)` is `nn.Conv(C_out, (3, 3), padding=1, use_bias=False)`'s function: stride
1, zero padding 1, x [N, h, w, C_in], kernel [3, 3, C_in, C_out] -> [N, h, w, C_out]. Its input
gradient is autodiff's. Its kernel gradient, a correlation of x with the output cotangent g over
(N, h, w), is what XLA:CPU computes as a convolution whose batch axis is x's channel axis and
whose feature axis is N: it transposes all of x to [C_in, h, w, N], element by element, and g to
[h, w, N, C_out], which moves whole C_out rows. When C_in > C_out (the U-Net's up blocks, which
read the skip connection as well), `conv3x3` computes the same correlation the other way round:
g is the convolution's input ([C_out, h, w, N]: the smaller array takes the costly transpose)
and x its kernel ([h, w, N, C_in]). Measured alone on 2 cores, MOVi-A's [44, 64, 64] maps:
64 -> 32 channels 121 -> 84 ms, [44, 32, 32] maps 128 -> 32 channels 41 -> 29 ms; with
C_in < C_out the plain form is the faster one (32 -> 64: 86 against 117 ms) and is kept. The
same sums in another order: kernel gradients equal to float32 rounding (tests/test_conv3x3.py).
With `winograd`, the convolution evaluated alone (not differentiated: replay collection,
evaluation) is `winograd.forward` (Winograd's F(2x2, 3x3)); under differentiation it stays XLA's.
"""
import functools

import jax
import jax.numpy as jnp

from vonet_jax.models import winograd as winograd_lib
from vonet_jax.models.lean_backward import tie_floats_to

_PADDING = ((1, 1), (1, 1))


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), _PADDING,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x, kernel, winograd: bool = False):
  """x [N, h, w, C_in], kernel [3, 3, C_in, C_out] -> [N, h, w, C_out] (module docstring)."""
  return winograd_lib.forward(x, kernel) if winograd else _conv(x, kernel)


def _conv3x3_fwd(x, kernel, winograd):
  return _conv(x, kernel), (x, kernel)


def _conv3x3_bwd(winograd, res, g):
  x, kernel = res
  (dx,) = jax.vjp(lambda x_: _conv(x_, kernel), x)[1](g)
  c_in, c_out = kernel.shape[2:]
  if c_in > c_out:
    dkernel = _kernel_gradient_from_cotangent(tie_floats_to(x, g), g)
  else:
    (dkernel,) = jax.vjp(lambda k: _conv(x, k), kernel)[1](g)
  return dx, dkernel.astype(kernel.dtype)


def _kernel_gradient_from_cotangent(x, g):
  """sum over (n, i, j) of x_padded[n, i + a, j + b, c] g[n, i, j, o] -> [3, 3, C_in, C_out],
  as a convolution of g (batch C_out, features N) with x as its kernel (inputs N, outputs C_in).

  That convolution gives out[o, a', b', c] = sum g_padded[n, i + a', j + b', o] x[n, i, j, c]
  = the kernel gradient at tap (2 - a', 2 - b'), hence the flip.
  """
  out = jax.lax.conv_general_dilated(g, x, (1, 1), _PADDING,
                                     dimension_numbers=("CHWN", "IHWO", "NHWC"))
  # out: [C_out, 3, 3, C_in]
  return jnp.flip(out, axis=(1, 2)).transpose(1, 2, 3, 0)  # [3, 3, C_in, C_out]


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
