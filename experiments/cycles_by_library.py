"""Where an update's CPU cycles go, by the code that spends them: Linux `perf` samples grouped.

    python -m experiments.cycles_by_library --config=configs/movi_a.py \\
        --config.train.batch_size=4 [--part=decoder] [--json_out=...]

`experiments.profile_ops` times XLA's ops, but the work Eigen hands to its thread pool (the
matmuls' and convolutions' arithmetic) is not itemised there. This samples the whole process with
`perf record` (Debian/Ubuntu package `linux-perf`; a process may sample its own threads where
`kernel.perf_event_paranoid` is at most 2) while it runs `--updates` updates (or a part's
gradient, `--part`) after two warm-ups, and sums the samples into:

- `gemm kernels`: oneDNN's JIT-generated matrix-multiply kernels, which XLA's Eigen matmuls and
  convolutions call for their arithmetic (named in perf through oneDNN's perf map,
  ONEDNN_JIT_PROFILE=2, which this script sets before jax starts);
- `operand packing`: Eigen copying the operands into the kernels' blocks (`image patches`: a
  convolution's input gathered patch by patch, im2col on the fly; `matrices`: a matmul's);
- `XLA fusions`: the code XLA generates itself (elementwise fusions, transposes, the random-bit
  hashes, its own small dots), which perf sees as unnamed JIT code;
- `YNNPACK`: its reductions (`vonet_jax.xla_cpu` leaves it the reductions only);
- `OS kernel` (mostly zeroing freshly faulted pages), `Eigen other` (its thread pool), other.

It prints each group's share and the gemm kernels' rate: the executable's FLOPs (XLA's
`cost_analysis`, which also counts the elementwise ops, so the rate is an upper bound) over the
CPU seconds that the gemm share stands for, beside a plain matmul's speed per core in the same
window (`timing.matmul_gflops`). Expected wall time at MOVi-A B=4 on 2 cores:
about 3 minutes.
"""
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from absl import flags

from experiments.benchmark_train import SETTLE_S
from experiments.compiled_stats import compiled_cost
from experiments.runners import compiled_runner
from experiments.timing import matmul_gflops, run_times
from vonet_jax import process_setup

FLAGS = flags.FLAGS  # --config, --json_out: benchmark_train's flags; --part: model_parts'
flags.DEFINE_integer("updates", 3, "Runs sampled (after two warm-ups).")
flags.DEFINE_integer("frequency", 499, "perf samples per second and thread.")

# `perf report -F sample,dso,sym --field-separator=;` rows: "  1549 ;<dso> ;[.] <symbol>"
# ([k] for the OS kernel). Raw counts, not percentages: XLA's fusions are thousands of unnamed
# addresses whose rounded percentages would read 0.00 %.
_ROW = re.compile(r"^\s*(\d+)\s*;(.+?)\s*;\[([.k])\]\s+(.*)$")


def library_of(dso: str, symbol: str) -> str:
  """The group (module docstring) of a sample in `dso` at `symbol`."""
  if re.search(r"gemm|gemv|jit_\w+_copy_\w+_kern", symbol) and "[JIT]" in dso:
    return "gemm kernels"
  if symbol.startswith("0x") and "[JIT]" in dso:
    return "XLA fusions"
  if "gemm_pack" in symbol:
    return "operand packing: " + ("image patches" if "ImagePatch" in symbol else "matrices")
  if symbol.startswith("ynn::"):
    return "YNNPACK"
  if "Eigen" in symbol:
    return "Eigen other"
  if "kernel" in dso:
    return "OS kernel"
  return "other"


def shares(report: str) -> dict:
  """group -> percent of all samples, from `perf report -F sample,dso,sym` text (`_ROW`)."""
  total = collections.Counter()
  for match in map(_ROW.match, report.splitlines()):
    if match:
      samples, dso, kind, symbol = match.groups()
      total["OS kernel" if kind == "k" else library_of(dso, symbol)] += int(samples)
  count = sum(total.values())
  return {group: round(100 * n / count, 2) for group, n in total.most_common()}


def sampled(run, runs: int, frequency: int) -> tuple[str, float, float]:
  """(`perf report` text, wall seconds, CPU seconds of this process) of `runs` calls of
  run(), awaited, under `perf record` (the pauses between them not counted)."""
  if shutil.which("perf") is None:
    raise SystemExit("perf not found: install Linux perf (Debian/Ubuntu: apt-get install "
                     "linux-perf) to sample the CPU cycles")
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, "perf.data")
    recorder = subprocess.Popen(
        ["perf", "record", "-F", str(frequency), "-o", data, "-p", str(os.getpid())],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # perf attaches to every thread
    if recorder.poll() is not None:
      raise SystemExit(f"perf record failed: {recorder.stderr.read().decode().strip()} "
                       "(sampling one's own process needs kernel.perf_event_paranoid <= 2)")
    cpu_start = time.process_time()  # this process's CPU seconds, all threads
    # Each run followed by a pause, as in the benchmark: back to back, a run allocates its
    # buffers before the last one's are freed, in fresh pages that the OS must zero first.
    wall_s = sum(run_times(run, runs, pause_s=SETTLE_S))
    cpu_s = time.process_time() - cpu_start
    recorder.send_signal(signal.SIGINT)
    recorder.wait()
    report = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "-F",
         "sample,dso,sym", "--field-separator=;", "-g", "none", "-q"],
        capture_output=True, text=True, check=True).stdout
  return report, wall_s, cpu_s


def main(argv):
  del argv
  os.environ.setdefault("ONEDNN_JIT_PROFILE", "2")  # oneDNN writes /tmp/perf-<pid>.map
  config = FLAGS.config
  compiled, run = compiled_runner(config, FLAGS.part)
  run_times(run, 2, pause_s=SETTLE_S)  # warm-up
  report, wall_s, cpu_s = sampled(run, FLAGS.updates, FLAGS.frequency)
  groups = shares(report)
  gflop = compiled_cost(compiled) / 1e9
  gemm_cpu_s = cpu_s * groups.get("gemm kernels", 0.0) / 100
  result = dict(
      config=config.data.name, batch_size=config.train.batch_size,
      part=FLAGS.part or "update", runs=FLAGS.updates,
      wall_s_per_run=round(wall_s / FLAGS.updates, 3),
      cpu_s_per_run=round(cpu_s / FLAGS.updates, 3), gflop_per_run=round(gflop, 1),
      # GFLOP per CPU second spent in the gemm kernels, and a plain matmul's per core
      gemm_gflops_per_cpu_s=round(gflop * FLAGS.updates / gemm_cpu_s, 1) if gemm_cpu_s else None,
      matmul_gflops_per_core=round(matmul_gflops() / len(os.sched_getaffinity(0)), 1),
      percent=groups)
  print(f"{result['part']}: {result['wall_s_per_run']} s wall and {result['cpu_s_per_run']} "
        f"CPU s per run, {gflop:.0f} GFLOP; the gemm kernels ran at "
        f"{result['gemm_gflops_per_cpu_s']} GFLOP per CPU second (a 2048^2 matmul: "
        f"{result['matmul_gflops_per_core']} GFLOP/s per core)")
  print("| code | share of the samples |\n|---|---|")
  for group, percent in groups.items():
    print(f"| {group} | {percent:.1f} % |")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=1)
  if os.path.exists(perf_map := f"/tmp/perf-{os.getpid()}.map"):
    os.remove(perf_map)  # oneDNN's map of its kernels (ONEDNN_JIT_PROFILE), read by the report


if __name__ == "__main__":
  process_setup.run(main)  # as vonet_jax.main: jemalloc, Eigen convolutions and dots
