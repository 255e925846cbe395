"""Slot latents: initial slots, slot encoder, GRU trajectory latent, posterior, prior, KL.

SPEC.md section 2, "Slot encoder" to "KL with balancing". D = slot size (128 in the paper).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vonet_jax.models.layers import Dense
from vonet_jax.models.transformer import FeedForward, SlotTransformer, layer_norm


class GRUCell(nn.Module):
  """PyTorch's GRUCell, with both bias sets (2 x 3D biases; flax's GRUCell has 2D fewer).

  r = sigmoid(W_ir x + b_ir + W_hr h + b_hr); z likewise;
  n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) * n + z * h.
  """
  features: int

  @nn.compact
  def __call__(self, x, h):
    # x: [..., D_in]; h: [..., D]
    gi = Dense(3 * self.features, name="input")(x)  # [..., 3D]: r, z, n
    gh = Dense(3 * self.features, name="hidden")(h)
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


class TrajectoryLatent(nn.Module):
  """Eq. 9: r' = GRU(y, r_prev); r = LayerNorm(r' + MLP(r'))."""
  hidden: int

  @nn.compact
  def __call__(self, y, r_prev):
    # y: [B, K, C]; r_prev: [B, K, D] -> [B, K, D]
    d = r_prev.shape[-1]
    r = GRUCell(d, name="gru")(y, r_prev)
    return layer_norm(name="norm")(r + FeedForward(self.hidden, d, name="mlp")(r))


class InitialSlots(nn.Module):
  """Eq. 5: r_0 = Transformer_slot(eps_1..K), eps ~ N(0, I) (noise given by the caller)."""
  transformer: Any
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, noise):
    # noise: [B, K, D] -> [B, K, D]
    t = self.transformer
    return SlotTransformer(num_layers=t.num_layers, num_heads=t.num_heads, head_dim=t.head_dim,
                           mlp_dim=t.mlp_dim, impl=self.attention_impl, name="transformer")(noise)


class GaussianHead(nn.Module):
  """MLP D -> hidden (ReLU) -> 2 * size, split into (mu, log_sigma)."""
  hidden: int
  size: int

  @nn.compact
  def __call__(self, x):
    mu, log_sigma = jnp.split(FeedForward(self.hidden, 2 * self.size, name="mlp")(x), 2, axis=-1)
    return mu, log_sigma


class Prior(nn.Module):
  """p(z_k | r_{t-1, 1..K}): FC -> slot transformer -> Gaussian head."""
  transformer: Any
  hidden: int
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, r_prev):
    # r_prev: [B, K, D] -> mu, log_sigma [B, K, D]
    d = r_prev.shape[-1]
    t = self.transformer
    x = Dense(d, name="input")(r_prev)
    x = SlotTransformer(num_layers=t.num_layers, num_heads=t.num_heads, head_dim=t.head_dim,
                        mlp_dim=t.mlp_dim, impl=self.attention_impl, name="transformer")(x)
    return GaussianHead(self.hidden, d, name="head")(x)


def gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p):
  """KL(q || p) of diagonal Gaussians, averaged over the last (latent) axis."""
  var_ratio = jnp.exp(2.0 * (log_sigma_q - log_sigma_p))
  mean_term = jnp.square(mu_q - mu_p) * jnp.exp(-2.0 * log_sigma_p)
  kl = log_sigma_p - log_sigma_q + 0.5 * (var_ratio + mean_term - 1.0)
  return kl.mean(axis=-1)


def balanced_kl(posterior, prior, kappa: float):
  """Eq. 10: kappa * KL(sg(q) || p) + (1 - kappa) * KL(q || sg(p)); kappa = 0.5 is plain KL.

  posterior, prior: (mu, log_sigma) pairs [..., D] -> [...].
  """
  sg = lambda pair: tuple(jax.lax.stop_gradient(v) for v in pair)
  return (kappa * gaussian_kl(*sg(posterior), *prior)
          + (1.0 - kappa) * gaussian_kl(*posterior, *sg(prior)))
