"""Benchmark of one training iteration: update, replay collection, sampling, FLOPs, memory.

    python -m experiments.benchmark_train --config=configs/movi_a.py --config.train.batch_size=4

Prints (for any config): parameter count; compiled FLOPs (`cost_analysis`) and memory
(`memory_analysis`) of the train step; median wall time per update, per collection iteration
(all workers x frames_per_iteration frames, one jitted call) and per replay sample, over
--repeats runs after warm-up (two updates; compile excluded; each update's own time too,
`update_runs_s`); the process's peak resident host
memory after compiling and timing the update (`peak_rss_gb`, getrusage's ru_maxrss: the figure
`/usr/bin/time -v` reports, compilation included; each update is let finish before the next,
as in the training loop, see `main`); the CPU seconds per wall second during the timed updates
(`update_cores_busy`); and the machine's speed in the same window, float32 matmul GFLOP/s and
memory bandwidth GB/s (`matmul_gflops`, `stream_gbs`: on a shared machine an update's time drifts
between windows, and these say how fast the window was). --compile_only skips the timing (for
configs too large to run here, e.g. MOVi-A at B=32). Expected wall time: the small config about a
minute; MOVi-A at B=1/B=2 on a 2-core CPU several minutes (compilation dominates).
"""
import importlib
import json
import resource
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from experiments.compiled_stats import compiled_figures
from experiments.timing import cores_busy, matmul_gflops, median_time, run_times, stream_gbs
from vonet_jax import host_memory, process_setup, replay

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("repeats", 5, "Timed runs per measurement (median reported).")
flags.DEFINE_bool("compile_only", False, "Only compile and report FLOPs and memory.")
flags.DEFINE_string("json_out", None, "Also write the figures to this JSON file.")


SETTLE_S = 0.1  # pause after each update: its temporaries are freed meanwhile


def random_batch(config, batch_size, rng):
  res, m, t = config.data.resolution, config.model, config.train.segment_length
  index = rng.integers(0, config.data.num_frames, (batch_size, t)).astype(np.int32)
  return dict(frames=rng.integers(0, 256, (batch_size, t, res, res, 3), dtype=np.uint8),
              state=rng.normal(size=(batch_size, m.num_slots, m.slot_size)).astype(np.float32),
              frame_index=index, first=index == 0)


class UpdateSetup(NamedTuple):
  """The train step lowered at a config's shapes, and what it runs on."""
  mesh: Any
  lowered: Any  # jax.stages.Lowered of train_step.make_train_step
  abstract_state: Any
  batch: dict  # a random batch (`random_batch`)
  iteration: Any
  init_state: Callable[[], Any]  # () -> the replicated initial state


def package_modules(package: str, *names: str) -> tuple:
  """The modules `{package}.{name}` for each name (`package`: `vonet_jax`, or
  `compare_revisions`' copy of another revision)."""
  return tuple(importlib.import_module(f"{package}.{name}") for name in names)


def lower_update(config, package: str = "vonet_jax") -> UpdateSetup:
  """The update lowered for the replicated state it will run on, so that calls run the executable
  compiled from it (an abstract state without the sharding made the first call compile the step
  a second time). `package`: the package whose model and step to lower (another revision's copy:
  `experiments.compare_revisions`)."""
  sharding, optim, train_step = package_modules(package, "sharding", "optim", "train_step")
  mesh = sharding.make_mesh()
  optimizer = optim.make_optimizer(config)
  replicated = sharding.replicated(mesh)
  abstract_state = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(lambda: train_step.init_train_state(config, jax.random.key(0), optimizer)))
  batch = sharding.global_batch(
      mesh, random_batch(config, config.train.batch_size, np.random.default_rng(0)))
  iteration = sharding.replicate(mesh, np.int32(10))
  lowered = train_step.make_train_step(config, optimizer, mesh).lower(abstract_state, batch,
                                                                     iteration)
  init_state = lambda: sharding.replicate(
      mesh, train_step.init_train_state(config, jax.random.key(0), optimizer))
  return UpdateSetup(mesh, lowered, abstract_state, batch, iteration, init_state)


def collection_runner(config, mesh, variables, package: str = "vonet_jax"):
  """(the compiled replay collection step, () -> its outputs): one collection iteration, all
  workers x `replay.frames_per_iteration` random frames from zero states, with `variables`
  (params and batch_stats, replicated on `mesh`). `package` as in `lower_update`."""
  sharding, train_step = package_modules(package, "sharding", "train_step")
  r, m, res = config.replay, config.model, config.data.resolution
  rng = np.random.default_rng(1)
  inputs = sharding.global_batch(mesh, (
      rng.integers(0, 256, (r.num_workers, r.frames_per_iteration, res, res, 3), dtype=np.uint8),
      np.zeros((r.num_workers, m.num_slots, m.slot_size), np.float32),
      np.zeros((r.num_workers, r.frames_per_iteration), bool)))
  key = jax.random.key(0)
  compiled = train_step.make_collect_step(config, mesh).lower(variables, *inputs, key).compile()
  return compiled, lambda: compiled(variables, *inputs, key)


def peak_resident_gb() -> float:
  """This process's peak resident memory so far, GB (getrusage's ru_maxrss: KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


class UpdateLoop:
  """Compiled updates run one after another on the state this carries (`setup.init_state()` at
  first): `loop(executable)` runs one update of `executable` (a compile of `setup.lowered`) on
  `setup.batch` and returns its loss."""

  def __init__(self, setup: UpdateSetup):
    self.setup, self.state = setup, setup.init_state()

  def __call__(self, executable):
    self.state, metrics = executable(self.state, self.setup.batch, self.setup.iteration)
    return metrics["loss"]


def main(argv):
  del argv
  config = FLAGS.config
  start = time.perf_counter()  # compile_s: tracing and compiling
  setup = lower_update(config)
  compiled = setup.lowered.compile()
  compile_s = time.perf_counter() - start
  host_memory.release_freed_memory()  # as the training loop does after compiling its update
  mesh, abstract_state = setup.mesh, setup.abstract_state
  rng = np.random.default_rng(1)
  b = config.train.batch_size
  figures = dict(
      config=config.data.name, batch_size=b, devices=jax.device_count(),
      device=str(jax.devices()[0].device_kind),
      host_allocator=host_memory.preloaded_allocator() or "system malloc",
      params=int(sum(x.size for x in jax.tree_util.tree_leaves(abstract_state.params))),
      compile_s=compile_s, **compiled_figures(compiled))
  if not FLAGS.compile_only:
    loop = UpdateLoop(setup)
    run_update = lambda: loop(compiled)
    # Each update is followed by a short pause, as the training loop follows it by the collection:
    # XLA:CPU frees an update's temporaries just *after* its outputs are ready, so an update
    # started at once after the previous one allocates its buffers before those are freed, in
    # fresh pages that the allocator then keeps (MOVi-A at B=4: 13.9 GB resident instead of 8.7).
    median_time(run_update, 2, pause_s=SETTLE_S)  # warm-up: these also grow the heap (2x slower)
    figures["matmul_gflops"] = matmul_gflops()  # the machine's speed in this window
    figures["stream_gbs"] = stream_gbs()
    update_runs, figures["update_cores_busy"] = cores_busy(
        lambda: run_times(run_update, FLAGS.repeats, pause_s=SETTLE_S),
        idle_s=FLAGS.repeats * SETTLE_S)
    figures["update_s"] = float(np.median(update_runs))
    figures["update_runs_s"] = [round(t, 3) for t in update_runs]  # the spread within this window
    figures["peak_rss_gb"] = peak_resident_gb()
    variables = dict(params=loop.state.params, batch_stats=loop.state.batch_stats)
    run_collect = collection_runner(config, mesh, variables)[1]
    figures["collect_s"] = median_time(run_collect, FLAGS.repeats, warmup=1)
    r, m = config.replay, config.model
    res = config.data.resolution
    buffer = replay.ReplayBuffer(r.num_workers, 64, (res, res, 3), (m.num_slots, m.slot_size),
                                 config.train.segment_length)
    for _ in range(32):
      buffer.add(np.zeros((r.num_workers, 2, res, res, 3), np.uint8),
                 np.zeros((r.num_workers, 2, m.num_slots, m.slot_size), np.float32),
                 np.zeros((r.num_workers, 2), np.int32))
    figures["sample_s"] = median_time(lambda: buffer.sample(b, rng)["frames"], 20)
  print(json.dumps(figures, indent=1))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  process_setup.run(main)  # as vonet_jax.main: jemalloc, Eigen convolutions and dots
