"""What training writes to TensorBoard through CLU: hparams, scalars and pictures; and reading
the scalars back."""
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vonet_jax import metrics, schedules, sharding, visualize
from vonet_jax.models.vonet import make_model


def flat_hparams(config: ml_collections.ConfigDict) -> dict:
  """Config flattened to {'model.num_slots': 11, ...} with scalar or string values."""
  out = {}

  def walk(prefix, node):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, (ml_collections.ConfigDict, dict)):
        walk(name + ".", value)
      elif isinstance(value, (bool, int, float, str)):
        out[name] = value
      else:
        out[name] = str(value)

  walk("", config)
  return out


def scalar_dict(values: dict) -> dict:
  """Host metrics -> {name: float}; array metrics (e.g. per-slot values) become their mean."""
  return {k: float(np.mean(v)) for k, v in values.items()}


def read_scalars(workdir: pathlib.Path, tag: str) -> dict[int, float]:
  """{step: value} of one CLU scalar from the TensorBoard event files of a workdir (not of its
  eval/ folder)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (only readers need it)
  values = {}
  for path in sorted(pathlib.Path(workdir).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for v in event.summary.value:
        if v.tag == tag:
          values[event.step] = float(tf.make_ndarray(v.tensor))
  return values


class TrainingPictures:
  """Images of the first segments of a training batch, in inference mode: input frames, soft
  masks per slot, hard segmentation over the frame, teacher-forced dVAE reconstruction."""

  def __init__(self, config, mesh, num_segments: int = 2):
    self.config = config
    self.num_segments = num_segments
    model = make_model(config, train=False)

    def pictures(variables, batch, iteration, rng):
      tau = schedules.gumbel_temperature(config, iteration)
      _, out = model.apply(variables, batch["frames"], batch["state"], batch["first"], tau,
                           rngs={"noise": rng, "gumbel": rng})
      return out["masks"], out["recon"]

    rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
    self._fn = jax.jit(pictures, in_shardings=(rep, dat, rep, rep), out_shardings=(dat, dat))

  def write(self, writer, iteration: int, state, batch, local_batch, rng):
    variables = dict(params=state.params, batch_stats=state.batch_stats)
    masks, recon = sharding.to_host(self._fn(variables, batch, jnp.asarray(iteration), rng))
    images = {}
    for i in range(min(self.num_segments, masks.shape[0])):
      video = local_batch["frames"][i]  # [T, H, W, 3]
      up = metrics.upsample_nearest(masks[i], video.shape[1])
      ids = metrics.segmentation_from_masks(up, self.config.eval.mask_threshold)
      grid = visualize.video_grid(video, up, ids)
      recon_row = np.concatenate(list(visualize.to_uint8(recon[i])), axis=1)
      images[f"train/segment{i}"] = np.concatenate([grid, recon_row], axis=0)[None]
    writer.write_images(iteration, images)
