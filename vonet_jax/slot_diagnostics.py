"""Why a model does (not) segment: do its slots stay apart, are its masks confident, does its
decoder use the slots at all, and do its dVAE tokens show the objects?

Five measurements on validation videos, most of them numbers that move long before FG-ARI does:
- slot spread per frame: mean distance of the K trajectory latents r_k to their mean. It goes to
  0 when the slots collapse to one vector (then every mask is 1/K and no pixel passes the 0.3
  threshold);
- mask confidence per frame: mean over pixels of max_k m_k, and the share of pixels above the
  evaluation threshold;
- decoder reliance on the slots: token cross-entropy of a frame given its own posterior slots z,
  the slots of another video, and zero slots. Equal values mean the decoder predicts the tokens
  from the autoregressive context alone and the encoder gets no learning signal from it;
- FG-ARI per frame: each frame's masks scored as an image (threshold as in evaluation). The
  video FG-ARI also counts a slot that changes objects between frames as an error; the per-frame
  score shows which frames segment and which do not (e.g. the frames right after the fresh
  initial slots, which training from the replay buffer seldom sees);
- dVAE codebook use: how many of the V words the frames' tokens use, and their entropy. A
  codebook collapsed to a handful of words (floor and objects sharing them) leaves the decoder
  little about the objects to predict, so the slots need not carry them.
"""
import jax
import jax.numpy as jnp
import numpy as np

from vonet_jax import metrics
from vonet_jax.models.decoder import token_cross_entropy
from vonet_jax.models.vonet import VONet, make_model


def slot_spread(r):
  """r [..., K, D] -> [...]: mean Euclidean distance of the K latents to their mean."""
  r = np.asarray(r)
  return np.linalg.norm(r - r.mean(axis=-2, keepdims=True), axis=-1).mean(axis=-1)


def codebook_use(tokens) -> dict:
  """tokens int [...] -> dict(words: distinct words used, entropy: of their frequencies, nats)."""
  _, counts = np.unique(np.asarray(tokens), return_counts=True)
  p = counts / counts.sum()
  return dict(words=int(len(counts)), entropy=float(-(p * np.log(p)).sum()))


def mask_confidence(masks, threshold: float):
  """masks [..., K, H, W] -> (mean max_k mask [...], share of pixels with max_k >= threshold
  [...]), the second matching `metrics.segmentation_from_masks`' non-null pixels."""
  peak = np.asarray(masks).max(axis=-3)
  return peak.mean(axis=(-2, -1)), (peak >= threshold).mean(axis=(-2, -1))


def fg_ari_per_frame(truth, segmentation, max_pred_id: int):
  """truth, segmentation int [N, T, H, W] -> [T]: image FG-ARI of each frame, mean over the
  videos whose frame has foreground."""
  n, t = truth.shape[:2]
  frames = lambda a: a.reshape((n * t, 1) + a.shape[2:])
  ari = metrics.fg_ari(frames(truth), frames(segmentation), max_pred_id).reshape(n, t)
  return np.nanmean(ari, axis=0)


def _rollout(config, variables, videos, seed: int):
  """Inference-mode encoder and decoder over whole videos [N, T, H, W, 3] from fresh slots."""
  model = make_model(config, train=False)
  n, t = videos.shape[:2]
  first = jnp.zeros((n, t), bool).at[:, 0].set(True)
  r0 = jnp.zeros((n, config.model.num_slots, config.model.slot_size))
  tau = config.train.tau_end
  rngs = dict(noise=jax.random.key(seed), gumbel=jax.random.key(seed + 1))
  apply = jax.jit(lambda v, x: model.apply(v, x, r0, first, tau, rngs=rngs)[1])
  return model, apply(variables, videos)


def decoder_reliance(model: VONet, variables, out) -> dict:
  """Mean token cross-entropy per frame [nats] of a rollout's N >= 2 videos (`_rollout`'s
  outputs) given the frame's own slots z, the slots of the next video (same frame index), and
  zero slots."""
  z, tokens = out["z"], out["tokens"]  # [N, T, K, D], [N, T, L]
  flat = lambda a: a.reshape((-1,) + a.shape[2:])

  @jax.jit
  def ce(v, slots):
    logits = model.apply(v, flat(slots), flat(tokens),
                         method=lambda m, s, x: m.decoder(s, x, deterministic=True))
    return token_cross_entropy(logits, flat(tokens)).mean()

  return dict(own=float(ce(variables, z)), other_video=float(ce(variables, jnp.roll(z, 1, 0))),
              zero=float(ce(variables, jnp.zeros_like(z))))


def diagnose(config, variables, videos: list[dict], seed: int = 0) -> dict:
  """All five measurements on `videos` (dicts with video uint8 [T, H, W, 3] and
  segmentations [T, H, W]). Per-frame figures are means over videos, lists of length T;
  fg_ari_argmax scores the masks without the threshold (every pixel to its strongest slot)."""
  frames = np.stack([v["video"] for v in videos])
  truth = np.stack([v["segmentations"] for v in videos])
  model, out = _rollout(config, variables, frames, seed)
  masks = metrics.upsample_nearest(np.asarray(out["masks"]), truth.shape[-1])  # [N, T, K, H, W]
  peak, above = mask_confidence(masks, config.eval.mask_threshold)
  k = config.model.num_slots
  ari, _ = metrics.fg_ari_and_miou(truth, metrics.segmentation_from_masks(masks, 0.0), k)
  per_frame = fg_ari_per_frame(
      truth, metrics.segmentation_from_masks(masks, config.eval.mask_threshold), k)
  return dict(slot_spread=slot_spread(out["r"]).mean(0).tolist(),
              mask_peak=peak.mean(0).tolist(), mask_above_threshold=above.mean(0).tolist(),
              fg_ari_argmax=float(np.nanmean(ari)), fg_ari_per_frame=per_frame.tolist(),
              codebook=codebook_use(out["tokens"]),
              token_ce=decoder_reliance(model, variables, out))
