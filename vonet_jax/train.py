"""The training loop: replay collection, sharded updates, summaries, checkpoints, evaluation.

`train_and_evaluate(config, workdir)` is what `python -m vonet_jax.main` runs; it can be called
from a notebook too. It reads top to bottom: set up devices and data, restore, then one loop in
which each iteration (1) advances the replay workers with the current parameters, (2) once the
buffer holds `config.replay.initial_frames` frames, samples segments and makes one update,
(3) writes summaries, evaluates and checkpoints on schedule.
"""
import signal
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from vonet_jax import (checkpointing, data, evaluate, host_memory, optim, schedules, seeds,
                       sharding, summaries, train_step)
from vonet_jax.config_validation import validate_config
from vonet_jax.data import prefetch
from vonet_jax.errors import UserError
from vonet_jax.replay import ReplayBuffer, VideoWorkers


class _Preempted:
  """SIGTERM sets a flag; the loop saves a checkpoint at the next iteration and stops."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some notebook runners): no handler
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def _host_rng(config, iteration: int) -> np.random.Generator:
  """Stateless host randomness (the replay sampling): a function of (replay seed, process,
  iteration), so resume is exact."""
  return np.random.default_rng([seeds.seed_of(config, "replay_seed"), jax.process_index(),
                                iteration])


def _collection_key(config) -> jax.Array:
  """The key of the collection's noise (folded with the iteration): from the collection seed."""
  return jax.random.key(seeds.seed_of(config, "collection_seed") + 1)


def segment_resets(frame_index, replay: bool = True):
  """frame_index int [B, T] -> first bool [B, T]: where the unroll resets to fresh initial
  slots. With replay (the default) only where a video starts; without (ablation wo-Replay) also
  at every segment's first frame, so the stored state is never used."""
  first = np.asarray(frame_index) == 0
  if not replay:
    first[:, 0] = True
  return first


class ReplayCollector:
  """The replay workers, their trajectory latents and the buffer of this process."""

  def __init__(self, config, mesh, videos_consumed: int = 0):
    r, m = config.replay, config.model
    res = config.data.resolution
    self.config = config
    self.mesh = mesh
    # Enough videos read ahead for every worker to change at once (data/prefetch.py says why).
    videos = prefetch.Prefetcher(data.train_videos(config, start=videos_consumed),
                                 depth=r.num_workers, name="training videos")
    self.workers = VideoWorkers(videos, r.num_workers, config.data.num_frames, (res, res, 3))
    self.buffer = ReplayBuffer(r.num_workers, r.capacity_per_worker, (res, res, 3),
                               (m.num_slots, m.slot_size), config.train.segment_length)
    self.state = np.zeros((r.num_workers, m.num_slots, m.slot_size), np.float32)  # r [W, K, D]
    self._collect = train_step.make_collect_step(config, mesh)
    self._videos = videos

    # The frames of the next collection ([W, F, H, W, 3], [W, F]), read ahead while the device
    # runs the update; part of the checkpoint.
    self.pending = None

  def collect(self, variables, rng):
    """Runs the encoder on the pending frames of every worker and stores the steps."""
    frames, index = self.pending  # [W, F, H, W, 3], [W, F]
    inputs = sharding.global_batch(self.mesh, (frames, self.state, index == 0))
    r_last, r_in = sharding.to_host(self._collect(variables, *inputs, rng))
    self.buffer.add(frames, r_in, index)
    self.state = r_last

  def read_ahead(self):
    """Reads the next frames_per_iteration frames of every worker (host work only)."""
    self.pending = self.workers.next_frames(self.config.replay.frames_per_iteration)

  def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
    """Segments for one update; 'first' marks where the unroll resets to fresh slots."""
    batch = self.buffer.sample(batch_size, rng)
    first = segment_resets(batch["frame_index"], self.config.replay.enabled)
    return dict(frames=batch["frames"], state=batch["state"], frame_index=batch["frame_index"],
                first=first)

  @property
  def video_wait_s(self) -> float:
    """Seconds the loop has waited for videos not yet read ahead (since this process began)."""
    return self._videos.waited_s

  def close(self):
    """Stops reading videos ahead."""
    self._videos.close()

  def state_dict(self) -> dict:
    return dict(buffer=self.buffer.state_dict(), workers=self.workers.state_dict(),
                worker_state=self.state, pending_frames=self.pending[0],
                pending_index=self.pending[1])

  def load_state_dict(self, d: dict):
    self.buffer.load_state_dict(d["buffer"])
    self.workers.load_state_dict(d["workers"])
    self.state = np.asarray(d["worker_state"], np.float32)
    self.pending = (np.asarray(d["pending_frames"]), np.asarray(d["pending_index"]))


def _host_state(collector: ReplayCollector, iteration: int) -> dict:
  return dict(collector.state_dict(), iteration=np.asarray(iteration, np.int64))


def _check_finite(metrics: dict, iteration: int, checkpointer) -> None:
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise UserError(
        f"non-finite loss ({loss}) at iteration {iteration}; training stopped, the last good "
        f"checkpoint (step {checkpointer.latest_step()}) is kept; lower the learning rates or "
        "check the data")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from workdir/checkpoints when present).

  Returns dict(iteration, metrics (last update's, on host), eval (last periodic evaluation's
  summary or None), state (the final TrainState)).
  """
  # --- Set up devices, model and optimiser ------------------------------------------------------
  validate_config(config, jax.device_count())
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh()
  process_batch = config.train.batch_size // jax.process_count()
  optimizer = optim.make_optimizer(config)
  state = train_step.init_train_state(config, train_step.model_key(config), optimizer)
  state = sharding.replicate(mesh, state)
  update = train_step.make_train_step(config, optimizer, mesh)
  first_update = schedules.first_training_iteration(config)

  # --- Restore from the latest good checkpoint --------------------------------------------------
  checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", config.checkpoints_to_keep)
  template = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = checkpointer.restore(train_state_template=template)
  iteration, videos_consumed = 0, 0
  if restored is not None:
    host = restored.host_state
    iteration = int(host["iteration"])
    videos_consumed = int(host["workers"]["videos_consumed"])
    state = restored.train_state
    logging.info("Restored checkpoint of iteration %d.", iteration)
  collector = ReplayCollector(config, mesh, videos_consumed)
  if restored is not None:
    collector.load_state_dict(restored.host_state)
  else:
    collector.read_ahead()

  # --- Summaries --------------------------------------------------------------------------------
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if iteration == 0:
    writer.write_hparams(summaries.flat_hparams(config))
  progress = periodic_actions.ReportProgress(num_train_steps=config.train.num_iterations,
                                             writer=writer)
  pictures = summaries.TrainingPictures(config, mesh)
  preempted = _Preempted()
  key = _collection_key(config)
  picture_key = jax.random.key(config.seed + 2)
  last_metrics: dict[str, Any] = {}
  compiled_update = None  # `update`, compiled at this process's first update
  purge_every = config.train.release_memory_every  # jemalloc purged before every N-th update
  eval_summary: Optional[dict] = None
  logging.info("Training from iteration %d to %d (updates start at %d).", iteration,
               config.train.num_iterations, first_update)

  periodic_log = workdir / "eval" / "periodic.jsonl"
  if config.eval.every and iteration == 0:  # the untrained model, as a reference
    eval_summary = evaluate.evaluate_state(config, state, mesh, writer, 0,
                                           config.eval.periodic_num_videos, log_file=periodic_log)

  # --- Loop ---------------------------------------------------------------------------------------
  while iteration < config.train.num_iterations:
    variables = dict(params=state.params, batch_stats=state.batch_stats)
    collector.collect(variables, jax.random.fold_in(key, iteration))
    iteration += 1
    if collector.buffer.ready(config.replay.initial_frames):
      local = collector.sample(process_batch, _host_rng(config, iteration))
      batch = sharding.global_batch(mesh, local)
      step = sharding.replicate(mesh, np.int32(iteration))
      if compiled_update is None:
        compiled_update = update.lower(state, batch, step).compile()
        host_memory.release_freed_memory()  # the compiler's freed memory (host_memory says why)
      elif purge_every and iteration % purge_every == 0:  # bounds the peak; costs page faults
        host_memory.release_freed_memory()
      state, metrics = compiled_update(state, batch, step)
      collector.read_ahead()  # host work while the device runs the update
      last_metrics = sharding.to_host(metrics)
      _check_finite(last_metrics, iteration, checkpointer)
      if iteration % config.log_scalars_every == 0:
        scalars = dict(last_metrics, replay_fill=collector.buffer.num_steps,
                       video_wait_s=collector.video_wait_s)
        writer.write_scalars(iteration, summaries.scalar_dict(scalars))
        logging.info("iteration %d/%d: loss %.4g (dVAE %.4g, CE %.4g, KL %.4g x beta %.3g)",
                     iteration, config.train.num_iterations, last_metrics["loss"],
                     last_metrics["dvae_mse"], last_metrics["token_ce"],
                     last_metrics["kl_total"], last_metrics["beta"])
      if iteration % config.log_images_every == 0:
        pictures.write(writer, iteration, state, batch, local,
                       jax.random.fold_in(picture_key, iteration))
    else:
      collector.read_ahead()
    progress(iteration)
    if config.eval.every and iteration % config.eval.every == 0:
      eval_summary = evaluate.evaluate_state(config, state, mesh, writer, iteration,
                                             config.eval.periodic_num_videos,
                                             log_file=periodic_log)
    if (iteration % config.checkpoint_every == 0 or preempted.requested
        or iteration == config.train.num_iterations):
      # Orbax copies the host arrays (the buffer's views) before save returns; the write goes
      # on in the background while training continues.
      checkpointer.save(iteration, state, _host_state(collector, iteration), force=True)
      if preempted.requested:
        checkpointer.wait()
        logging.warning("SIGTERM: saved the checkpoint of iteration %d; stopping.", iteration)
        break
  writer.flush()
  collector.close()
  checkpointer.close()
  return dict(iteration=iteration, metrics=last_metrics, eval=eval_summary, state=state)
