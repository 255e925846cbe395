"""Where an update's CPU time goes, op by op: a `jax.profiler` trace summed by op kind and scope.

    python -m experiments.profile_ops --config=configs/movi_a.py --config.train.batch_size=4
    python -m experiments.profile_ops --config=configs/movi_a.py --config.train.batch_size=4 \\
        --part=decoder

Compiles the whole update (or one part of `experiments.model_parts`, forward + backward, or with
--part=collection the replay collection step), runs it twice to warm up, then once under
`jax.profiler`, and reads the trace's XLA:CPU op events (one per fusion, dot, convolution, copy...
on each of XLA's worker threads). Prints the op time summed three ways: by op kind (the HLO name
without its number: `transpose_copy_fusion`, `ynn_fusion`, `dot`, ...), by scope (the model module
that emitted the op, from the compiled HLO's `op_name` metadata, cut to `--scope_depth` levels,
forward and backward apart), and the `--top` single ops (with their result shapes and scopes).

Op time is summed over threads, so it can exceed the wall time; and the work that Eigen's
convolutions and matmuls hand to the thread pool is not itemised, only the op that waits for it
(`convolution.N`, `dot.N`), so those ops' time counts their wall time on one thread. Run it on
idle cores, like the benchmarks. Expected wall time at MOVi-A B=4 on 2 cores: about 3 minutes.
"""
import collections
import glob
import json
import re
import tempfile
import time

import jax
from absl import flags

from experiments.benchmark_train import SETTLE_S
from experiments.runners import compiled_runner
from vonet_jax import process_setup

FLAGS = flags.FLAGS  # --config, --json_out: benchmark_train's flags; --part: model_parts'
flags.DEFINE_integer("top", 25, "Rows of each table.")
flags.DEFINE_integer("scope_depth", 3, "Levels of the module path kept in the scope table.")

# Trace events on XLA's threads that are not ops: the thread pool's and executor's own records.
_NOT_OPS = re.compile(r"::|^end: |^\$")
_HLO_METADATA = re.compile(
    r"^\s*(?:ROOT )?%?([\w.\-]+) = ([^{ ]*).*?metadata=\{[^}]*op_name=\"([^\"]*)\"")


def op_scopes(hlo_text: str) -> dict:
  """HLO instruction name -> (its result's shape, e.g. "f32[12,4,64,128]", the `op_name` of its
  metadata: jax's name stack)."""
  return {m.group(1): (m.group(2), m.group(3))
          for m in map(_HLO_METADATA.match, hlo_text.splitlines()) if m}


def scope_of(op_name: str, depth: int) -> str:
  """The module path of a jax `op_name`, cut to `depth` modules, with the pass it belongs to.

  e.g. "jit(update)/jvp(VONet)/decoder.cross_entropy/decoder._teacher_forced/transformer/block_3/
  self_attention/dot_general" -> "forward: decoder/transformer/block_3" at depth 3 (a method call
  `module.method` counts as its module; the top module, here VONet, and jax's wrappers are left
  out); transposed (backward) ops get "backward".
  """
  parts = op_name.split("/")[1:-1]  # drop jit(...) and the primitive
  backward = any(p.startswith("transpose(") for p in parts)
  modules = []
  for part in parts:
    part = re.sub(r"^(?:(?:jvp|transpose|vmap|remat|checkpoint|jit)\()+([^()]*)\)*$", r"\1", part)
    modules.append(part.split(".")[0])
  top = modules[0] if modules else ""
  path = []
  for module in modules:
    if module not in (top, "closed_call", "") and (not path or path[-1] != module):
      path.append(module)
  return f"{'backward' if backward else 'forward'}: {'/'.join(path[:depth]) or '(top)'}"


def read_trace(trace_dir: str):
  """[(op name, seconds)] of every XLA op event in the trace, over all threads."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the profiler's own format
  (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  events = []
  for plane in space.planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if not _NOT_OPS.search(name):
          events.append((name, event.duration_ps * 1e-12))
  return events


def tables(events, scopes: dict, depth: int, top: int) -> dict:
  """The three tables (`__doc__`): name -> [(key, seconds, count)] sorted by seconds."""
  by = {"kind": collections.Counter(), "scope": collections.Counter(), "op": collections.Counter()}
  counts = {name: collections.Counter() for name in by}
  for name, seconds in events:
    shape, op_name = scopes.get(name, ("", None))
    scope = scope_of(op_name, depth) if op_name else "(no metadata)"
    keys = dict(kind=re.sub(r"\.\d+$", "", name), scope=scope, op=f"{name} {shape} ({scope})")
    for table, key in keys.items():
      by[table][key] += seconds
      counts[table][key] += 1
  return {table: [(key, round(s, 4), counts[table][key]) for key, s in c.most_common(top)]
          for table, c in by.items()}


def profile(run) -> tuple[float, list]:
  """(wall seconds, `read_trace` events) of one `run()` under the profiler (awaited)."""
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      jax.block_until_ready(run())
    wall_s = time.perf_counter() - start
    return wall_s, read_trace(trace_dir)


def main(argv):
  del argv
  config = FLAGS.config
  compiled, run = compiled_runner(config, FLAGS.part)
  for _ in range(2):  # warm-up
    jax.block_until_ready(run())
    time.sleep(SETTLE_S)
  wall_s, events = profile(run)
  scopes = op_scopes(compiled.as_text())
  result = dict(config=config.data.name, batch_size=config.train.batch_size,
                part=FLAGS.part or "update", wall_s=round(wall_s, 3),
                op_s=round(sum(s for _, s in events), 3), ops=len(events),
                **tables(events, scopes, FLAGS.scope_depth, FLAGS.top))
  print(f"{result['part']}: {wall_s:.2f} s wall under the profiler, {result['op_s']:.2f} s of op "
        f"time in {len(events)} op events")
  for table in ("kind", "scope", "op"):
    print(f"\n| {table} | op s | events |\n|---|---|---|")
    for key, seconds, count in result[table]:
      print(f"| {key} | {seconds:.3f} | {count} |")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  process_setup.run(main)  # as vonet_jax.main: jemalloc, Eigen convolutions and dots
