"""Everything the pictures need about one video: masks, segmentation, scores, KL, latents and
reconstructions from posterior and prior slots (used by evaluation and the notebook)."""
import jax
import jax.numpy as jnp
import numpy as np

from vonet_jax import metrics, visualize
from vonet_jax.models.vonet import VONet, make_model


def analyze_video(config, variables, video, segmentations=None, seed: int = 0,
                  reconstruct: bool = True) -> dict:
  """Runs the model (inference mode) over one whole video from fresh initial slots.

  Args:
    video: uint8 [T, H, W, 3]; segmentations: optional int [T, H, W] ground truth.
    reconstruct: also decode posterior and prior slots greedily (KV-cached), per frame.

  Returns dict of numpy arrays: masks [T, K, H, W] (upsampled), pred_ids [T, H, W],
  r [T, K, D] trajectory latents, kl [T, K] per-slot KL, and when asked recon_posterior /
  recon_prior [T, H, W, 3] in [0, 1]; fg_ari and miou when segmentations are given.
  """
  model = make_model(config, train=False)
  t = video.shape[0]
  m = config.model
  first = jnp.zeros((1, t), bool).at[:, 0].set(True)
  r0 = jnp.zeros((1, m.num_slots, m.slot_size))
  rng = jax.random.key(seed)
  encode = jax.jit(lambda v, x: model.apply(v, x, r0, first, method=VONet.encode,
                                            rngs={"noise": rng})[1])
  out = jax.tree_util.tree_map(lambda a: np.asarray(a[0]), encode(variables, video[None]))
  masks = metrics.upsample_nearest(out["masks"], video.shape[1])
  result = dict(masks=masks, r=out["r"], kl=out["kl"],
                pred_ids=metrics.segmentation_from_masks(masks, config.eval.mask_threshold))
  if reconstruct:
    decode = jax.jit(lambda v, z: model.apply(v, z, method=VONet.reconstruct))
    for name, z in (("recon_posterior", out["z"]), ("recon_prior", out["prior_mu"])):
      result[name] = np.clip(np.asarray(decode(variables, z)), 0.0, 1.0)  # [T, H, W, 3]
  if segmentations is not None:
    ari, iou = metrics.fg_ari_and_miou(segmentations[None], result["pred_ids"][None],
                                       m.num_slots)
    result.update(fg_ari=float(ari[0]), miou=float(iou[0]))
  return result


def pictures(video, analysis: dict, segmentations=None) -> dict:
  """uint8 images: segmentation grid, reconstructions (if present), per-slot KL plot."""
  images = dict(segmentation=visualize.video_grid(video, analysis["masks"], analysis["pred_ids"],
                                                  segmentations),
                kl=visualize.kl_plot(analysis["kl"]))
  if "recon_posterior" in analysis:
    images["reconstruction"] = visualize.reconstruction_grid(
        video, analysis["recon_posterior"], analysis["recon_prior"])
  return images
