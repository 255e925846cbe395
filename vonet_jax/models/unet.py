"""The MONet-style U-Net that refines the attention masks (SPEC.md section 2).

Runs on N = B*K maps at once (slots folded into the batch axis): down path with InstanceNorm,
bottleneck MLP, an optional transformer across the K slots of each frame, up path with skips,
final 1x1 conv to one channel of delta logits.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from vonet_jax.models.conv3x3 import conv3x3
from vonet_jax.models.layers import ConvParams, Dense, PointwiseConv
from vonet_jax.models.lean_backward import InstanceNorm, max_pool2
from vonet_jax.models.materialize import materialize
from vonet_jax.models.transformer import SlotTransformer
from vonet_jax.models.unet_input import FusedUNetInput
from vonet_jax.models.upsampled_conv import UpsampledWithSkip

# Inputs kept as their parts, each with its own 3x3 convolution.
_INPUTS_AS_PARTS = (FusedUNetInput, UpsampledWithSkip)


class ConvNormRelu(nn.Module):
  """conv3x3 (no bias; `conv3x3.conv3x3`) -> InstanceNorm (affine, eps 1e-5) -> ReLU.

  x: [N, h, w, C] maps, or a `FusedUNetInput` or `UpsampledWithSkip` whose convolution is
  computed from its parts (the same parameters) -> [N, h, w, channels]. `winograd`: the 3x3
  convolutions by Winograd's algorithm where they are not differentiated (`models/winograd.py`).
  """
  channels: int
  dtype: Any = jnp.float32
  winograd: bool = False

  @nn.compact
  def __call__(self, x):
    # nn.Conv(channels, (3, 3), padding=1, use_bias=False)'s parameters
    kernel, _ = ConvParams((3, 3, x.shape[-1], self.channels), use_bias=False, name="conv")()
    kernel = kernel.astype(self.dtype)
    if isinstance(x, _INPUTS_AS_PARTS):
      conv = x.conv3x3(kernel, self.winograd)
      # The fused input's convolution, a sum of its parts' convolutions, and its cotangent are
      # stored once, else each of their consumers recomputes them (`materialize`; measured for
      # the up blocks' two-part sums too, where it was slower).
      x = materialize(conv, cotangent=True) if isinstance(x, FusedUNetInput) else conv
    else:  # nn.Conv's function
      x = conv3x3(x.astype(self.dtype), kernel, self.winograd)
    x = InstanceNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    # jax's ReLU here, not `lean_backward.relu`: with the latter the tiny test config's training
    # (tests/test_train.py, XLA optimisations off) reached a NaN loss at its 4th iteration, though
    # the U-Net's gradients are bit for bit the same in isolation (README "Performance").
    return nn.relu(x)


def up_channels(down_channels: Sequence[int]) -> list[int]:
  """Output channels of the up blocks: the down channels mirrored, one level shifted."""
  n = len(down_channels)
  return [down_channels[max(n - 2 - j, 0)] for j in range(n)]


class UNet(nn.Module):
  """x [B, K, h, w, C] (an array or a `FusedUNetInput`) -> delta logits [B, K, h, w].

  Attributes:
    channels: down-path channels; every block but the first ends with a 2x max-pool, so the
      bottleneck map is h / 2**(len(channels) - 1).
    fc: width of the bottleneck MLP (and model size of the mask transformer).
    transformer: config of the mask transformer across slots (num_layers, num_heads, head_dim,
      mlp_dim), or None for no slot mixing (MONet's recurrent attention).
    zero_output: the last 1x1 conv starts at zero (kernel and bias), so the U-Net's delta logits
      start at 0 everywhere and the masks at the estimated masks; default False: flax's default
      initialisation (the authors' code initialises every conv alike).
    winograd: the 3x3 convolutions by Winograd's algorithm where they are not differentiated
      (collection, evaluation; `models/winograd.py`).
  """
  channels: Sequence[int]
  fc: int
  transformer: Optional[Any] = None
  attention_impl: str = "xla"
  remat: bool = False
  zero_output: bool = False
  dtype: Any = jnp.float32
  winograd: bool = False

  @nn.compact
  def __call__(self, x):
    b, k, h, w, c = x.shape
    block_cls = nn.remat(ConvNormRelu) if self.remat else ConvNormRelu
    if not isinstance(x, FusedUNetInput):
      x = x.reshape(b * k, h, w, c)  # [N, h, w, C], N = B*K
    skips = []
    for i, ch in enumerate(self.channels):
      x = block_cls(ch, dtype=self.dtype, winograd=self.winograd, name=f"down{i}")(x)
      # Stored once: read by the next block, its kernel gradient's transposed copy and a skip.
      x = materialize(max_pool2(x) if i > 0 else x)
      skips.append(x)
    _, bh, bw, bc = x.shape  # bottleneck map, e.g. 4x4x128
    emb = nn.relu(Dense(self.fc, dtype=self.dtype, name="fc1")(x.reshape(b * k, -1)))
    emb = nn.relu(Dense(self.fc, dtype=self.dtype, name="fc2")(emb))  # [N, fc]
    if self.transformer is not None:
      emb = SlotTransformer(
          num_layers=self.transformer.num_layers, num_heads=self.transformer.num_heads,
          head_dim=self.transformer.head_dim, mlp_dim=self.transformer.mlp_dim,
          impl=self.attention_impl, remat=self.remat, dtype=self.dtype,
          name="mask_transformer",
      )(emb.reshape(b, k, self.fc)).reshape(b * k, self.fc)
    x = nn.relu(Dense(bh * bw * bc, dtype=self.dtype, name="fc_up")(emb))
    x = x.reshape(b * k, bh, bw, bc)
    out_channels = up_channels(self.channels)
    for j, skip in enumerate(reversed(skips)):
      # concat([x, skip]), and from the second block on concat([upsample2(x), skip]), whose
      # convolution runs on x's own grid (`upsampled_conv`: the same function, fewer FLOPs).
      x = jnp.concatenate([x, skip], axis=-1) if j == 0 else UpsampledWithSkip(x, skip)
      x = block_cls(out_channels[j], dtype=self.dtype, winograd=self.winograd,
                    name=f"up{j}")(x)
    init = nn.initializers.zeros_init() if self.zero_output else nn.linear.default_kernel_init
    delta = PointwiseConv(1, dtype=self.dtype, kernel_init=init, name="out")(x)  # [N, h, w, 1]
    return delta.reshape(b, k, h, w).astype(jnp.float32)
