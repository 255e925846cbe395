"""The 3x3 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
algorithms for convolutional neural networks", 2016), for the convolutions that XLA:CPU evaluates
without differentiating them: the replay collection and evaluation.

The zero-padded (one pixel), stride-1 3x3 convolution of x [N, h, w, C] with kernel [3, 3, C, O]
(h and w even), computed on 4 x 4 tiles of the padded input at stride 2, each giving a 2 x 2 tile
of the output:

  Y = A^T [(G g G^T) * (B^T d B)] A     (per tile d [4, 4] and channel pair, * elementwise)

  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
  G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

Summed over the input channels, the 16 products are 16 matmuls [tiles, C] x [C, O] with the
transformed kernel: 16 multiply-adds per 2 x 2 output pixels and channel pair where the plain
convolution takes 36 (0.44 of its FLOPs), plus the transforms of the input (B^T d B) and of the
products (A^T m A), which are additions. The same function in exact arithmetic; float32 results
differ by rounding (relative 1e-6 at MOVi-A's shapes; tests/test_winograd.py compares it with
the plain convolution).

Only where nothing is differentiated: `conv3x3` here and `models.conv3x3.conv3x3(...,
winograd=True)` are custom VJPs whose primal function (run when the convolution is evaluated
alone) is `forward` and whose forward pass under differentiation is XLA's convolution, so that
training computes what it computed before, bit for bit. In training Winograd's forward pass made
the MOVi-A B=4 update slower by turns (faster in 6 of 12 rounds, mean -0.22 s): the forward
convolutions are a small share of an update, and their outputs are read again by the backward
pass.

The maps are transformed and multiplied in chunks of the batch (`lax.map`), each chunk at most
`CHUNK_BYTES` of input, so that a chunk's 16 transformed tiles are still in cache when their
matmuls read them: one backbone convolution of the collection ([32, 64, 64, 64] -> 64 channels,
2 cores) took 56 ms as XLA's convolution, 58-72 ms as one Winograd pass over the whole batch and
41-48 ms in chunks of 1-2 MB (chunks of 8 MB: no gain).

Where it is used (`applies`): the transforms are memory traffic, 16 (C + O) values per tile
written and read, for 20 C O multiply-adds saved, so it pays where C O / (C + O) is large. Each
of the collection's convolutions alone by turns (15 rounds, 2 cores, chunks of 2 MB, two runs):
the backbone's (64 -> 64 channels) 0.76-0.81 of XLA's time, F's (128 -> 32) 0.62-0.82, the
U-Net's down blocks 64 -> 64 0.70-0.72, 64 -> 128 0.69-0.82, 128 -> 128 0.59-0.63 and the up
blocks' skip terms 128 -> 64 0.65-0.71 and 64 -> 64 0.70-0.94; but 32 -> 64 (down1) 0.83-1.06,
64 -> 32 (up3) 0.73-1.10 and 32 -> 32 (up4) 0.98-1.08: those (C O / (C + O) = 21, 21 and 16)
keep XLA's convolution (`MIN_INTENSITY`). So do calls on few or small maps, whose chunks of
whole maps (dividing N) hold less than half of `CHUNK_BYTES`: alone by turns (21 rounds), one
map of 8 x 8 x 128 took 1.46-1.75x XLA's time, 16 x 16 x 64 1.13-1.28x, and 11 maps of 32 x 32 x
64 (11 is prime: chunks of one map) 1.43x, where one 64 x 64 x 64 map took 0.85x; Figure 5's
MONet attention (one map per U-Net call) was slower with them. XLA's convolution is also used
where h or w is odd or under `MIN_SIZE`, and for other dtypes than float32 (bfloat16 transforms
would round more).

Why: the replay collection is the convolutions' forward pass, at about the machine's matmul
speed (README "Performance"). On a GPU cuDNN chooses its own algorithm (Winograd's among them),
so config.model.conv3x3 = "auto" uses this on the CPU backend only (`enabled`).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

CHUNK_BYTES = 2 << 20  # input bytes per chunk of maps (module docstring)
MIN_SIZE = 8  # smallest h and w computed this way
MIN_INTENSITY = 24  # smallest C O / (C + O) computed this way (module docstring)

_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)


def enabled(setting: str) -> bool:
  """config.model.conv3x3: "winograd" -> True, "direct" -> False, "auto" -> on the CPU backend."""
  return setting == "winograd" or (setting == "auto" and jax.default_backend() == "cpu")


def chunk_size(x) -> int:
  """Maps per chunk: the most that divide x's N maps evenly and hold at most `CHUNK_BYTES` of
  input (one map at least)."""
  n = x.shape[0]
  per_map = _map_bytes(x)
  return max(d for d in range(1, n + 1) if n % d == 0 and (d == 1 or d * per_map <= CHUNK_BYTES))


def applies(x, out_channels: int) -> bool:
  """Whether `forward` computes the convolution of x [N, h, w, C] to `out_channels` by Winograd's
  algorithm (else by XLA's): even h and w of at least `MIN_SIZE`, float32, C O / (C + O) of at
  least `MIN_INTENSITY`, and chunks that fill at least half of `CHUNK_BYTES` (few or small maps:
  the matmuls are too small to pay for the transforms; module docstring)."""
  _, h, w, c = x.shape
  return (h % 2 == 0 and w % 2 == 0 and min(h, w) >= MIN_SIZE and x.dtype == jnp.float32
          and c * out_channels >= MIN_INTENSITY * (c + out_channels)
          and 2 * chunk_size(x) * _map_bytes(x) >= CHUNK_BYTES)


def _map_bytes(x) -> int:
  return math.prod(x.shape[1:]) * x.dtype.itemsize


def _plain(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _input_tiles(x):
  """x [n, h, w, C] -> the 16 transformed tiles B^T d B, each [n, h/2, w/2, C] (index 4 a + b).

  Tile (i, j) reads rows 2i .. 2i + 3 and columns 2j .. 2j + 3 of x zero-padded by one pixel: with
  the padded rows split into even (e) and odd (o) ones, its rows are e_i, o_i, e_{i+1}, o_{i+1},
  and B^T's rows give e_i - e_{i+1}, o_i + e_{i+1}, e_{i+1} - o_i, o_i - o_{i+1}; likewise for the
  columns."""

  def transform(d, axis):  # d's `axis`: the padded rows (or columns), 2 (tiles + 1) of them
    d = d.reshape(d.shape[:axis] + (d.shape[axis] // 2, 2) + d.shape[axis + 1:])
    take = lambda start, parity: jax.lax.index_in_dim(
        jax.lax.slice_in_dim(d, start, start + d.shape[axis] - 1, axis=axis), parity,
        axis + 1, keepdims=False)
    e, o, e1, o1 = take(0, 0), take(0, 1), take(1, 0), take(1, 1)
    return [e - e1, o + e1, e1 - o, o - o1]

  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # [n, h + 2, w + 2, C]
  return [t for rows in transform(padded, 1) for t in transform(rows, 2)]


def _output(products):
  """The 16 products [n, h/2, w/2, O] (index 4 a + b) -> A^T m A, [n, h, w, O]."""
  m = [products[4 * a:4 * a + 4] for a in range(4)]
  rows = ([m[0][b] + m[1][b] + m[2][b] for b in range(4)],  # A^T's rows over a
          [m[1][b] - m[2][b] - m[3][b] for b in range(4)])
  y = [[r[0] + r[1] + r[2], r[1] - r[2] - r[3]] for r in rows]  # y[row phase][column phase]
  n, th, tw, o = products[0].shape
  y = jnp.stack([jnp.stack(phases, axis=3) for phases in y], axis=2)  # [n, th, 2, tw, 2, O]
  return y.reshape(n, 2 * th, 2 * tw, o)


def forward(x, kernel):
  """The zero-padded 3x3 convolution, x [N, h, w, C], kernel [3, 3, C, O] -> [N, h, w, O], by
  F(2x2, 3x3) in chunks of the batch where it `applies`, else by XLA's convolution."""
  if not applies(x, kernel.shape[-1]):
    return _plain(x, kernel)
  n, c = x.shape[0], x.shape[-1]
  chunk = chunk_size(x)
  tiles_kernel = jnp.einsum("au,bv,uvco->abco", _G, _G, kernel).reshape(16, c, -1)  # G g G^T

  def chunk_forward(xc):  # [chunk, h, w, C] -> [chunk, h, w, O]
    tiles = _input_tiles(xc)
    return _output([jnp.dot(t.reshape(-1, c), tiles_kernel[i]).reshape(t.shape[:-1] + (-1,))
                    for i, t in enumerate(tiles)])

  y = jax.lax.map(chunk_forward, x.reshape((n // chunk, chunk) + x.shape[1:]))
  return y.reshape(x.shape[:-1] + (kernel.shape[-1],))


@jax.custom_vjp
def conv3x3(x, kernel):
  """The zero-padded 3x3 convolution (no bias), x [N, h, w, C], kernel [3, 3, C, O] ->
  [N, h, w, O]: by `forward` where it is evaluated alone, XLA's (with autodiff's gradients)
  where it is differentiated (module docstring)."""
  return forward(x, kernel)


def _conv3x3_fwd(x, kernel):
  return _plain(x, kernel), (x, kernel)


def _conv3x3_bwd(residuals, g):
  return jax.vjp(_plain, *residuals)[1](g)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
