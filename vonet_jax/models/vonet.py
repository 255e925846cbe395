"""VONet: the whole model, one frame for all K slots at once, unrolled over a segment.

    model = VONet(config=FrozenConfigDict(config.model), train=True)
    r_last, out = model.apply(variables, frames, r_prev, first, tau, rngs=..., mutable=...)

Inputs: frames [B, T, H, W, 3] (uint8, or float in [0, 1]); r_prev [B, K, D], the trajectory
latents before the segment's first frame; first [B, T] bool, True where a video starts (the
state is reset there to fresh initial slots drawn from N(0, I) noise). Rngs: 'noise' (initial
slots, posterior samples), 'gumbel' (dVAE relaxation), 'dropout' (decoder, train only).

`train` selects BatchNorm batch statistics and decoder dropout (True) or running statistics and
no dropout (False: replay collection, evaluation, pictures).
"""
from typing import Any

import flax.linen as nn
import ml_collections
import jax
import jax.numpy as jnp

from vonet_jax.models import winograd
from vonet_jax.models.attention import ParallelAttention
from vonet_jax.models.backbone import Backbone
from vonet_jax.models.decoder import TransformerDecoder
from vonet_jax.models.dvae import DVAE
from vonet_jax.models.layers import ConvParams
from vonet_jax.models.slots import (GaussianHead, InitialSlots, Prior, TrajectoryLatent,
                                    balanced_kl)


class SlotStep(nn.Module):
  """One frame: reset where needed, attend, encode slots, update r, posterior, prior, KL.

  Args of __call__: r_prev [B, K, D]; features [B, h, w, C]; first [B] bool.
  Returns (r [B, K, D], outputs) with outputs:
    r_in [B, K, D] (input state after the reset), r [B, K, D], masks / log_masks /
    est_log_masks [B, K, h, w], post_mu / post_log_sigma / prior_mu / prior_log_sigma [B, K, D],
    z [B, K, D] (posterior sample), kl [B, K] (balanced, mean over D).
  """
  cfg: Any

  @nn.compact
  def __call__(self, r_prev, features, first):
    cfg = self.cfg
    c = features.shape[-1]
    noise = jax.random.normal(self.make_rng("noise"), r_prev.shape)
    r0 = InitialSlots(cfg.init_transformer, cfg.attention_impl, name="initial_slots")(noise)
    r_in = jnp.where(first[:, None, None], r0, r_prev)  # [B, K, D]
    out = ParallelAttention(cfg, name="attention")(features, r_in)
    kernel, bias = ConvParams((c, c), name="values")()  # nn.Dense(c)'s parameters
    y = masked_mean_of_values(out["masks"], features, kernel, bias)  # [B, K, C]
    r = TrajectoryLatent(cfg.mlp_hidden, name="trajectory")(y, r_in)
    posterior = GaussianHead(cfg.posterior_hidden, r.shape[-1], name="posterior")(r)
    prior = Prior(cfg.prior_transformer, cfg.posterior_hidden, cfg.attention_impl,
                  name="prior")(r_in)
    eps = jax.random.normal(self.make_rng("noise"), r.shape)
    out.update(
        r_in=r_in, r=r, z=posterior[0] + jnp.exp(posterior[1]) * eps,
        post_mu=posterior[0], post_log_sigma=posterior[1],
        prior_mu=prior[0], prior_log_sigma=prior[1],
        kl=balanced_kl(posterior, prior, cfg.kl_balance))
    return r, out


def masked_mean_of_values(masks, features, kernel, bias):
  """The mask-weighted sum over pixels of the values V = features @ kernel + bias, divided by the
  pixel count (the authors' code), not by the mask mass.

  Computed as (the masked mean of the features) @ kernel + (the mean mask) * bias: the same sum in
  exact arithmetic (float32 results differ by rounding; tests/test_model.py), without the values
  [B, h, w, C] (a [B*h*w, C] x [C, C] matmul, 2.1 GFLOP per step of MOVi-A's 16-worker
  collection).

  Args:
    masks: [B, K, h, w].
    features: [B, h, w, C].
    kernel: [C, C_out]; bias: [C_out].

  Returns:
    [B, K, C_out].
  """
  _, _, h, w = masks.shape
  mean_features = jnp.einsum("bkhw,bhwc->bkc", masks, features) / (h * w)  # [B, K, C]
  mean_mask = jnp.mean(masks, axis=(2, 3))  # [B, K]
  return jnp.dot(mean_features, kernel) + mean_mask[..., None] * bias


def _scan_slot_step(unroll: int):
  return nn.scan(SlotStep, variable_broadcast="params", split_rngs={"params": False, "noise": True},
                 in_axes=1, out_axes=1, unroll=unroll)


def frames_to_float(frames):
  """uint8 frames -> float32 in [0, 1] (on device); float frames pass through."""
  if frames.dtype == jnp.uint8:
    return frames.astype(jnp.float32) / 255.0
  return frames.astype(jnp.float32)


def make_decoder(cfg, num_tokens: int) -> TransformerDecoder:
  """The decoder that model config `cfg` (config.model) describes, for `num_tokens` tokens."""
  d = cfg.decoder
  return TransformerDecoder(
      vocab_size=cfg.dvae.vocab_size, num_tokens=num_tokens, d_model=d.d_model,
      num_heads=d.num_heads, num_layers=d.num_layers, ffn_dim=d.ffn_dim, dropout=d.dropout,
      memory_hidden=cfg.mlp_hidden, impl=cfg.attention_impl, causal_blocks=d.causal_blocks,
      recompute_attention=d.recompute_attention, recompute_blocks=d.recompute_blocks,
      remat=cfg.remat, token_dropout=d.token_dropout,
      dtype=jnp.dtype(cfg.compute_dtype))


class VONet(nn.Module):
  """The full model. Top-level parameter groups: backbone, dynamics, dvae, decoder."""
  config: Any  # FrozenConfigDict of config.model
  train: bool = False

  def setup(self):
    cfg = self.config
    self.backbone = Backbone(cfg.backbone_channels, cfg.backbone_blocks, cfg.feature_size,
                             winograd=winograd.enabled(cfg.conv3x3))
    # Training segments (T = 3) are unrolled: XLA:CPU runs the backward pass of a while loop
    # about 10x slower than the unrolled steps. Long inference rollouts keep the loop.
    self.dynamics = _scan_slot_step(True if self.train else 1)(cfg)
    dtype = jnp.dtype(cfg.compute_dtype)  # parameters stay float32
    self.dvae = DVAE(vocab_size=cfg.dvae.vocab_size, hidden=cfg.dvae.hidden,
                     relu_before_log_softmax=cfg.dvae.relu_before_log_softmax, dtype=dtype)
    self.decoder = make_decoder(cfg, self.num_tokens)

  @property
  def num_tokens(self) -> int:
    return (self.config.resolution // 4) ** 2

  def encode(self, frames, r_prev, first):
    """Encoder side only (what replay collection and evaluation need).

    frames [B, T, H, W, 3], r_prev [B, K, D], first [B, T] -> (r_last [B, K, D], outputs of
    SlotStep stacked over time: [B, T, ...]).
    """
    x = frames_to_float(frames)
    b, t = x.shape[:2]
    if self.train:
      # BatchNorm batch statistics of each time step separately (as the authors' per-step
      # calls), running statistics updated once per step.
      features = jnp.stack([self.backbone(x[:, i], True) for i in range(t)], axis=1)
    else:
      # Running statistics: every frame is independent, so fold time into the batch.
      features = self.backbone(x.reshape((b * t,) + x.shape[2:]), False)
      features = features.reshape((b, t) + features.shape[1:])  # [B, T, h, w, C]
    return self.dynamics(r_prev, features, first)

  def __call__(self, frames, r_prev, first, tau):
    """Encoder and decoder: everything the losses need.

    Returns (r_last, outputs): the encode() outputs plus dvae_mse [B, T] (squared error summed
    over pixels), token_ce [B, T] (cross-entropy summed over tokens), recon [B, T, H, W, 3]
    (teacher-forced dVAE reconstruction) and tokens [B, T, N].
    """
    r_last, out = self.encode(frames, r_prev, first)
    b, t = frames.shape[:2]
    flat = lambda a: a.reshape((b * t,) + a.shape[2:])
    unflat = lambda a: a.reshape((b, t) + a.shape[1:])
    dvae = self.dvae(flat(frames_to_float(frames)), tau, self.make_rng("gumbel"))
    token_ce = self.decoder.cross_entropy(flat(out["z"]), dvae["tokens"],
                                          deterministic=not self.train)  # [B*T]
    out.update(dvae_mse=unflat(dvae["mse"]), recon=unflat(dvae["recon"]),
               tokens=unflat(dvae["tokens"]), token_ce=unflat(token_ce))
    return r_last, out

  def reconstruct(self, z):
    """Greedy autoregressive decoding (KV cache) of slots z [B, K, D] -> images [B, H, W, 3]."""
    tokens = self.decoder.greedy_decode(z)  # [B, N]
    return self.dvae.decode_tokens(tokens)


def make_model(config, train: bool) -> VONet:
  """VONet from a full config (config.model frozen here, so that the module is hashable)."""
  return VONet(config=ml_collections.FrozenConfigDict(config.model), train=train)
