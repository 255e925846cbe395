"""The U-Net's up-block convolution of an upsampled map, computed on the map's own grid.

An up block's input is concat([upsample2(x), skip]): the last block's output, nearest-neighbour
upsampled 2x, beside the skip connection. Its 3x3 convolution (zero padding 1, no bias) is linear
in the input, so it splits into conv3x3(upsample2(x), W_x) + conv3x3(skip, W_skip) (W's input
channels cut in two). Each 2x2 block of the upsampled map holds one pixel of x, so the first term
needs no upsampled map: output pixel (2i + a, 2j + b) reads the rows i - 1 + a, i + a and the
columns j - 1 + b, j + b of x, with the 3x3 kernel's taps summed over the upsampled pixels that
repeat the same pixel of x:

  phase a = 0 (even rows): x row i - 1 takes tap 0, x row i takes taps 1 + 2;
  phase a = 1 (odd rows):  x row i takes taps 0 + 1, x row i + 1 takes tap 2;

and likewise for the columns. The four phases' 2x2 kernels, side by side as 4 O output channels,
make one 2x2 convolution of x zero-padded by one pixel ([N, h + 1, w + 1, 4 O]), from which each
phase takes its h x w window. Zero padding agrees on both grids (the upsampled map's outside
pixels are the repeats of x's outside pixels). The same function as the plain path in exact
arithmetic (the taps are summed before multiplying: float32 results differ by rounding, tested in
tests/test_upsampled_conv.py), with 16 (h + 1)(w + 1) / (36 h w) of its multiply-adds (0.47 at
MOVi-A's last up block) and no upsampled map in memory. Shapes: N maps, [h, w] x's grid.
"""
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vonet_jax.models.conv3x3 import conv3x3

# _PHASE_TAPS[a][u, t]: whether the 3x3 kernel's tap t (rows, or columns) lands on x's u-th row
# of the 2x2 window of phase a (module docstring).
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]],
                        [[1, 1, 0], [0, 0, 1]]], np.float32)  # [2 (a), 2 (u), 3 (t)]
_NHWC = ("NHWC", "HWIO", "NHWC")


def upsample2(x):
  """Nearest-neighbour 2x upsampling: [N, h, w, C] -> [N, 2h, 2w, C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def conv3x3_of_upsampled(x, kernel):
  """conv3x3(upsample2(x), kernel) on x's own grid (module docstring).

  Args:
    x: [N, h, w, C].
    kernel: [3, 3, C, O].

  Returns:
    [N, 2h, 2w, O].
  """
  n, h, w, _ = x.shape
  out = kernel.shape[-1]
  taps = jnp.asarray(_PHASE_TAPS, kernel.dtype)
  # Phase (a, b)'s 2x2 kernel: [2 (u), 2 (v), C, 2 (a), 2 (b), O] -> [2, 2, C, 4 O].
  phases = jnp.einsum("aus,bvt,stco->uvcabo", taps, taps, kernel)
  y = _phase_conv(x, phases.reshape(2, 2, x.shape[-1], 4 * out))  # [N, h + 1, w + 1, 4 O]
  y = y.reshape(n, h + 1, w + 1, 2, 2, out)  # [N, h + 1, w + 1, a, b, O]
  # Output pixel (2i + a, 2j + b) is phase (a, b)'s window at (i + a, j + b).
  rows = [jnp.stack([y[:, a:a + h, b:b + w, a, b] for b in range(2)], axis=3)
          for a in range(2)]  # each [N, h, w, 2 (b), O]
  return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, out)  # [N, h, 2 (a), w, 2 (b), O]


@jax.custom_vjp
def _phase_conv(x, kernel):
  """The 2x2 convolution of x zero-padded by one pixel on each side: x [N, h, w, C], kernel
  [2, 2, C, P] -> [N, h + 1, w + 1, P].

  Its gradients are written out (`_phase_conv_bwd`): XLA:CPU computes autodiff's kernel gradient
  of this padded 2x2 convolution about 15x slower than the same sums as a matmul.
  """
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=_NHWC)


def _phase_conv_fwd(x, kernel):
  return _phase_conv(x, kernel), (x, kernel)


def _phase_conv_bwd(res, g):
  """g [N, h + 1, w + 1, P] -> (dx [N, h, w, C], dkernel [2, 2, C, P])."""
  x, kernel = res
  _, h, w, _ = x.shape
  # y[r, s] = sum over taps (u, v) of x_padded[r + u, s + v] @ kernel[u, v], so
  # dx[i, j] = sum over (u, v) of g[i + 1 - u, j + 1 - v] @ kernel[u, v]^T.
  dx = sum(jnp.einsum("nijp,cp->nijc", g[:, 1 - u:1 - u + h, 1 - v:1 - v + w], kernel[u, v])
           for u in range(2) for v in range(2))
  # dkernel[u, v] = sum over (n, r, s) of x_padded[n, r + u, s + v]^T g[n, r, s]: one matmul of
  # the 2x2 patches [N, h + 1, w + 1, 4 C] with g.
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate([padded[:, u:u + h + 1, v:v + w + 1]
                             for u in range(2) for v in range(2)], axis=-1)
  dkernel = jnp.einsum("nijc,nijp->cp", patches, g).reshape(kernel.shape)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_phase_conv.defvjp(_phase_conv_fwd, _phase_conv_bwd)


@flax.struct.dataclass
class UpsampledWithSkip:
  """An up block's input concat([upsample2(low), skip], axis=-1), kept as its two parts.

  Attributes:
    low: [N, h / 2, w / 2, C_low], the last block's output before upsampling.
    skip: [N, h, w, C_skip].
  """
  low: jnp.ndarray
  skip: jnp.ndarray

  @property
  def shape(self):
    """The shape of the concatenated maps, [N, h, w, C_low + C_skip]."""
    return self.skip.shape[:-1] + (self.low.shape[-1] + self.skip.shape[-1],)

  def conv3x3(self, kernel, winograd: bool = False):
    """The zero-padded 3x3 convolution (no bias) of the concatenated maps: kernel
    [3, 3, C_low + C_skip, O] -> [N, h, w, O]; with `winograd`, the skip term's convolution by
    Winograd's algorithm where it is not differentiated (`conv3x3.conv3x3`)."""
    c_low = self.low.shape[-1]
    dtype = kernel.dtype
    return (conv3x3_of_upsampled(self.low.astype(dtype), kernel[:, :, :c_low])
            + conv3x3(self.skip.astype(dtype), kernel[:, :, c_low:], winograd))
