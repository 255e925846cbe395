"""VONet's parallel attention and MONet's recurrent attention over the same U-Net.

Both turn the feature map F [B, h, w, C] and the previous trajectory latents r [B, K, D] into
K attention masks [B, K, h, w] that sum to one over slots at every pixel (SPEC.md section 2).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vonet_jax.models import winograd
from vonet_jax.models.layers import ConvParams
from vonet_jax.models.transformer import FeedForward
from vonet_jax.models.unet import UNet
from vonet_jax.models.unet_input import unet_input_from_config


def key_context_logits(features, context, kernel, bias):
  """The scaled dot products of the keys F @ kernel + bias with the contexts c_k, per pixel:
  logits [B, K, h, w] = (F @ kernel + bias) . c_k / sqrt(C).

  Computed as F . (kernel @ c_k) + bias . c_k: the same sums in exact arithmetic (float32
  results differ by rounding; tests/test_model.py), without the keys [B, h, w, C] (a
  [B*h*w, C] x [C, C] matmul, 2.1 GFLOP per step of MOVi-A's 16-worker collection).

  Args:
    features: F [B, h, w, C_in].
    context: [B, K, C].
    kernel: [C_in, C]; bias: [C].
  """
  queries = jnp.einsum("ic,bkc->bki", kernel, context)  # [B, K, C_in]
  offsets = jnp.einsum("c,bkc->bk", bias, context)  # [B, K]
  # Pixel-major first ([B, h, w, K]), then the small result transposed: XLA:CPU would otherwise
  # transpose F itself to [B, C_in, h*w] for the matmul.
  logits = jnp.einsum("bhwi,bki->bhwk", features, queries).transpose(0, 3, 1, 2)
  return (logits + offsets[:, :, None, None]) / jnp.sqrt(context.shape[-1])


class ParallelAttention(nn.Module):
  """VONet's attention: all K masks of a frame in one U-Net call on B*K maps.

  Returns dict with masks, log_masks and est_log_masks (the dot-product estimate), each
  [B, K, h, w].
  """
  cfg: Any  # config.model (FrozenConfigDict)

  @nn.compact
  def __call__(self, features, r_prev):
    # features: [B, h, w, C]; r_prev: [B, K, D]
    cfg = self.cfg
    c = features.shape[-1]
    # c_k = MLP_cxt(r_k): D -> hidden (ReLU) -> C
    context = FeedForward(cfg.mlp_hidden, c, name="context")(r_prev)  # [B, K, C]
    kernel, bias = ConvParams((c, c), name="keys")()  # nn.Dense(c)'s parameters
    logits = key_context_logits(features, context, kernel, bias)  # [B, K, h, w]
    est_log_masks = jax.nn.log_softmax(logits, axis=1)  # [B, K, h, w]
    out = dict(est_log_masks=est_log_masks)
    if not cfg.use_unet:  # ablation "wo-UNet"
      out.update(log_masks=est_log_masks, masks=jnp.exp(est_log_masks))
      return out
    dtype = jnp.dtype(cfg.compute_dtype)
    x = unet_input_from_config(cfg, dtype)(
        features, jnp.exp(est_log_masks), est_log_masks, context)  # [B, K, h, w, C] maps
    delta = UNet(tuple(cfg.unet_channels), cfg.unet_fc, cfg.mask_transformer,
                 attention_impl=cfg.attention_impl, remat=cfg.remat,
                 zero_output=cfg.unet_zero_output, dtype=dtype,
                 winograd=winograd.enabled(cfg.conv3x3), name="unet")(x)  # [B, K, h, w]
    log_masks = jax.nn.log_softmax(delta + est_log_masks, axis=1)
    out.update(log_masks=log_masks, masks=jnp.exp(log_masks))
    return out


class _MonetStep(nn.Module):
  """One step of MONet's recurrence: attend to part of the remaining scope."""
  cfg: Any

  @nn.compact
  def __call__(self, log_scope, features, context):
    # log_scope: [B, h, w]; features: [B, h, w, C]; context: [B, C]
    cfg = self.cfg
    x = unet_input_from_config(cfg)(
        features, jnp.exp(log_scope)[:, None], log_scope[:, None], context[:, None])
    alpha = UNet(tuple(cfg.unet_channels), cfg.unet_fc, None,
                 winograd=winograd.enabled(cfg.conv3x3), name="unet")(x)[:, 0]  # [B, h, w]
    log_mask = log_scope + jax.nn.log_sigmoid(alpha)
    return log_scope + jax.nn.log_sigmoid(-alpha), log_mask


class RecurrentAttention(nn.Module):
  """MONet's recurrent attention (baseline for the paper's Figure 5 timing only).

  Slot k takes a share sigmoid(alpha_k) of the remaining scope, one U-Net call after another
  (lax.scan over slots, log space); the last slot takes what is left. Same U-Net and inputs as
  ParallelAttention, without the mask transformer (slots are not available at once).
  Returns masks [B, K, h, w].
  """
  cfg: Any

  @nn.compact
  def __call__(self, features, r_prev):
    b, h, w, c = features.shape
    context = FeedForward(self.cfg.mlp_hidden, c, name="context")(r_prev)  # [B, K, C]
    scan = nn.scan(_MonetStep, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=(nn.broadcast, 1), out_axes=1)
    log_scope, log_masks = scan(self.cfg, name="step")(
        jnp.zeros((b, h, w)), features, context[:, :-1])  # log_masks: [B, K-1, h, w]
    log_masks = jnp.concatenate([log_masks, log_scope[:, None]], axis=1)
    return jnp.exp(log_masks)
