"""Evaluation over whole videos as the paper does (SPEC.md section 5).

Each validation video runs through the model for all its frames from fresh initial slots
(carrying the state, jitted with a scan over frames, batched over videos, sharded over devices);
masks [K, h, w] are upsampled (nearest) to the ground truth's size, turned into ids (0 where no
slot reaches the threshold) and scored with FG-ARI and mIoU over each video's T*H*W pixels.
"""
import json
from typing import Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from etils import epath
from jax.experimental import multihost_utils

from vonet_jax import (checkpointing, data, metrics, optim, sharding, train_step, video_analysis,
                       visualize)
from vonet_jax.config_validation import validate_config
from vonet_jax.errors import UserError
from vonet_jax.models.vonet import VONet, make_model


def make_mask_fn(config, mesh):
  """Jitted (variables, frames uint8 [N, T, H, W, 3], rng) -> masks [N, T, K, h, w] from fresh
  initial slots at frame 0 (model in inference mode)."""
  model = make_model(config, train=False)
  m = config.model

  def masks(variables, frames, rng):
    n, t = frames.shape[:2]
    first = jnp.zeros((n, t), bool).at[:, 0].set(True)
    r0 = jnp.zeros((n, m.num_slots, m.slot_size))
    _, out = model.apply(variables, frames, r0, first, method=VONet.encode, rngs={"noise": rng})
    return out["masks"]

  rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(masks, in_shardings=(rep, dat, rep), out_shardings=dat)


def _batches(videos: Iterable[dict], batch_size: int) -> Iterator[tuple[list, int]]:
  """Groups videos into lists of batch_size, padding the last by repeating its final video;
  yields (videos, number of real ones)."""
  batch = []
  for video in videos:
    batch.append(video)
    if len(batch) == batch_size:
      yield batch, batch_size
      batch = []
  if batch:
    yield batch + [batch[-1]] * (batch_size - len(batch)), len(batch)


def evaluate_videos(config, variables, videos: Iterable[dict], mesh, seed: int,
                    mask_fn=None) -> list[dict]:
  """Per-video FG-ARI and mIoU: [{name, fg_ari, miou}] in the order of `videos`.

  videos: dicts with video uint8 [T, H, W, 3], segmentations int [T, H, W], name. Every process
  reads the same videos and feeds its share of each batch; the scores are gathered.
  """
  mask_fn = mask_fn or make_mask_fn(config, mesh)
  per_process = config.eval.batch_size // jax.process_count()
  lo = jax.process_index() * per_process
  rng = jax.random.key(seed)
  results = []
  for i, (batch, valid) in enumerate(_batches(videos, config.eval.batch_size)):
    mine = batch[lo:lo + per_process]
    frames = np.stack([v["video"] for v in mine])  # [n, T, H, W, 3]
    n, t = frames.shape[:2]
    if config.eval.independent_frames:  # Table 2 protocol: every frame an image of its own
      frames = frames.reshape((n * t, 1) + frames.shape[2:])
    masks = sharding.to_host(mask_fn(variables, sharding.global_batch(mesh, frames),
                                     jax.random.fold_in(rng, i)))  # [n, T, K, h, w]
    truth = np.stack([v["segmentations"] for v in mine])  # [n, T, H, W]
    pred = metrics.segmentation_from_masks(metrics.upsample_nearest(masks, truth.shape[-1]),
                                           config.eval.mask_threshold)
    if config.eval.independent_frames:  # image metrics per frame, averaged per video
      per_frame = metrics.fg_ari_and_miou(truth.reshape((n * t, 1) + truth.shape[2:]),
                                          pred.reshape((n * t, 1) + truth.shape[2:]),
                                          config.model.num_slots)
      scores = np.stack([np.nanmean(x.reshape(n, t), axis=1) for x in per_frame], axis=-1)
    else:
      scores = np.stack(metrics.fg_ari_and_miou(truth, pred, config.model.num_slots), axis=-1)
    if jax.process_count() > 1:
      scores = multihost_utils.process_allgather(scores).reshape(-1, 2)
    for video, (ari, iou) in zip(batch[:valid], scores[:valid]):
      results.append(dict(name=str(video["name"]), fg_ari=float(ari), miou=float(iou)))
  return results


def summary_of(results: list[dict]) -> dict:
  """Mean / std / n of each metric over videos."""
  return {k: metrics.summarize([r[k] for r in results]) for k in ("fg_ari", "miou")}


def evaluate_state(config, state, mesh, writer, iteration: int, num_videos: Optional[int] = None,
                   seed: int = 0, log_file: Optional[epath.Path] = None) -> dict:
  """Periodic evaluation during training on the first num_videos validation videos; appends
  {iteration, fg_ari, miou} to log_file (JSON lines) when given. Also scores whole-video
  rollouts of as many training videos (scalars train_videos/*, clearly not a test score)."""
  variables = dict(params=state.params, batch_stats=state.batch_stats)
  mask_fn = make_mask_fn(config, mesh)
  train = summary_of(evaluate_videos(
      config, variables, data.validation_videos(config, num_videos, split="train"), mesh, seed,
      mask_fn))
  results = evaluate_videos(config, variables, data.validation_videos(config, num_videos),
                            mesh, seed, mask_fn)
  summary = summary_of(results)
  writer.write_scalars(iteration, {f"eval/{k}": v["mean"] for k, v in summary.items()})
  writer.write_scalars(iteration, {f"train_videos/{k}": v["mean"] for k, v in train.items()})
  logging.info("Evaluation at iteration %d on %d videos: FG-ARI %.4f, mIoU %.4f", iteration,
               len(results), summary["fg_ari"]["mean"], summary["miou"]["mean"])
  if log_file is not None and jax.process_index() == 0:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as f:
      f.write(json.dumps(dict(iteration=iteration, **summary)) + "\n")
  return summary


def restore_variables(config, workdir, step: Optional[int] = None):
  """(step, variables) of a checkpoint in workdir/checkpoints (latest when step is None)."""
  mesh = sharding.make_mesh()
  optimizer = optim.make_optimizer(config)
  abstract = jax.eval_shape(
      lambda: train_step.init_train_state(config, jax.random.key(0), optimizer))
  rep = sharding.replicated(mesh)
  template = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), abstract)
  checkpointer = checkpointing.Checkpointer(epath.Path(workdir) / "checkpoints",
                                            config.checkpoints_to_keep)
  restored = checkpointer.restore(step, train_state_template=template, restore_host_state=False)
  checkpointer.close()
  if restored is None:
    raise UserError(f"no checkpoint in {workdir}/checkpoints; train first (--mode=train) or "
                    "pass the --workdir of a trained run")
  state = restored.train_state
  return restored.step, dict(params=state.params, batch_stats=state.batch_stats)


def run_evaluation(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """--mode=eval: scores a checkpoint on the whole validation split, config.eval.seeds times,
  and writes workdir/eval/<step>/metrics.json (per video, per seed, and across seeds)."""
  validate_config(config, jax.device_count())
  mesh = sharding.make_mesh()
  step = None if config.eval.checkpoint_step < 0 else config.eval.checkpoint_step
  step, variables = restore_variables(config, workdir, step)
  mask_fn = make_mask_fn(config, mesh)
  per_seed = []
  for seed in range(config.eval.seeds):
    results = evaluate_videos(config, variables, data.validation_videos(config), mesh, seed,
                              mask_fn)
    per_seed.append(dict(seed=seed, videos=results, **summary_of(results)))
    logging.info("Seed %d: FG-ARI %.4f, mIoU %.4f over %d videos", seed,
                 per_seed[-1]["fg_ari"]["mean"], per_seed[-1]["miou"]["mean"], len(results))
  across = {k: dict(mean=float(np.mean([s[k]["mean"] for s in per_seed])),
                    std=float(np.std([s[k]["mean"] for s in per_seed])), seeds=len(per_seed))
            for k in ("fg_ari", "miou")}
  report = dict(step=step, num_videos=len(per_seed[0]["videos"]), across_seeds=across,
                per_seed=per_seed, config=json.loads(config.to_json_best_effort()))
  out_dir = epath.Path(workdir) / "eval" / str(step)
  writer = metric_writers.create_default_writer(
      epath.Path(workdir) / "eval", just_logging=jax.process_index() > 0)
  writer.write_scalars(step, {f"eval/{k}": v["mean"] for k, v in across.items()})
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    _write_pictures(config, variables, out_dir, writer, step)
  writer.flush()
  return report


def _write_pictures(config, variables, out_dir, writer, step):
  """PNG + GIF/MP4 of the first config.eval.num_pictures validation videos, also to TensorBoard."""
  for video in data.validation_videos(config, config.eval.num_pictures):
    analysis = video_analysis.analyze_video(config, variables, video["video"],
                                            video["segmentations"])
    images = video_analysis.pictures(video["video"], analysis, video["segmentations"])
    for kind, image in images.items():
      visualize.save_png(out_dir / f"{video['name']}_{kind}.png", image)
    writer.write_images(step, {f"eval/{video['name']}/{k}": v[None] for k, v in images.items()})
    overlay = visualize.overlay(video["video"], analysis["pred_ids"])
    visualize.save_video(out_dir / f"{video['name']}_segmentation.mp4", overlay)
