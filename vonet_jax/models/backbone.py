"""Convolutional backbone shared by the attention and the slot encoder (SPEC.md section 2).

frame [B, H, W, 3] in [0, 1] -> feature map F [B, H/2, W/2, feature_size], with an additive
position embedding.
"""
import flax.linen as nn
import jax.numpy as jnp

from vonet_jax.models.conv3x3 import conv3x3
from vonet_jax.models.layers import ConvParams, PointwiseConv
from vonet_jax.models.lean_backward import relu
from vonet_jax.models.materialize import materialize
from vonet_jax.models.short_broadcast import repeat
from vonet_jax.models.transformer import FeedForward

# PyTorch BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPS = 1e-5


class ResNetBlock(nn.Module):
  """relu(BN(conv(relu(BN(conv(x))))) + shortcut); bias-free 3x3 convs.

  The stride-2 block pads explicitly by one pixel per side (as PyTorch), not XLA 'SAME'; its
  shortcut is a strided 1x1 conv + BN, the others are the identity. The stride-1 convolutions
  are `conv3x3.conv3x3` (nn.Conv's parameters and function), with `winograd` by Winograd's
  algorithm where they are not differentiated.
  """
  channels: int
  stride: int = 1
  winograd: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    # x: [B, H, W, C_in]
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=name)

    def conv(x, name: str, stride: int):  # bias-free 3x3, zero padding 1
      if stride != 1:
        return nn.Conv(self.channels, (3, 3), strides=stride, padding=((1, 1), (1, 1)),
                       use_bias=False, name=name)(x)
      kernel, _ = ConvParams((3, 3, x.shape[-1], self.channels), use_bias=False, name=name)()
      return conv3x3(x, kernel, self.winograd)

    y = relu(norm("bn1")(conv(x, "conv1", self.stride)))
    y = norm("bn2")(conv(y, "conv2", 1))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.channels:
      shortcut = nn.Conv(self.channels, (1, 1), strides=self.stride, use_bias=False,
                         name="shortcut_conv")(x)
      shortcut = norm("shortcut_bn")(shortcut)
    y = relu(y + shortcut)  # [B, H/stride, W/stride, channels]
    # Stored once in training (`materialize`): else the transposed copy of it that the next
    # block's kernel gradients read recomputes the residual chain back through every block.
    return materialize(y) if train else y


def position_grid(height: int, width: int) -> jnp.ndarray:
  """[height, width, 4] grid of [y, x, 1 - y, 1 - x], each a linspace(0, 1)."""
  y, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, height), jnp.linspace(0.0, 1.0, width),
                      indexing="ij")
  return jnp.stack([y, x, 1.0 - y, 1.0 - x], axis=-1)


class PositionEmbedding(nn.Module):
  """Per-pixel MLP 4 -> C (ReLU) -> C on the position grid, added to the feature map."""

  @nn.compact
  def __call__(self, features):
    # features: [B, h, w, C]
    _, h, w, c = features.shape
    emb = FeedForward(c, c, name="mlp")(position_grid(h, w))  # [h, w, C]
    return features + repeat(emb[None], features.shape[0], 0)  # emb's gradient: short_broadcast


class Backbone(nn.Module):
  """num_blocks ResNet blocks (first with stride 2), 1x1 conv to feature_size, position emb."""
  channels: int = 64
  num_blocks: int = 5
  feature_size: int = 128
  winograd: bool = False  # stride-1 3x3 convs by Winograd's algorithm where not differentiated

  @nn.compact
  def __call__(self, frame, train: bool):
    # frame: [B, H, W, 3] float in [0, 1]
    x = frame
    for i in range(self.num_blocks):
      x = ResNetBlock(self.channels, stride=2 if i == 0 else 1, winograd=self.winograd,
                      name=f"block{i}")(x, train)
    x = PointwiseConv(self.feature_size, name="proj")(x)  # [B, H/2, W/2, feature_size]
    return PositionEmbedding(name="pos_emb")(x)
