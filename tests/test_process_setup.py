"""Tests of vonet_jax.process_setup: an entry point's main runs once, under jemalloc where
installed, with the Eigen-kernel flag set before jax computes."""
import subprocess
import sys

from tests.host_env import JEMALLOC_INSTALLED, clean_env
from vonet_jax import xla_cpu

_PROGRAM = """
import os, sys
from vonet_jax import host_memory, process_setup
def main(argv):
  print("main", argv[1:], host_memory.preloaded_allocator(), os.environ.get("XLA_FLAGS", ""))
if __name__ == "__main__":
  process_setup.run(main)
"""


def _run(**env):
  out = subprocess.run([sys.executable, "-c", _PROGRAM, "positional"], capture_output=True,
                       text=True, check=True, env=clean_env("XLA_FLAGS", **env)).stdout
  return [line for line in out.split("\n") if line.startswith("main")]


def test_run_prepares_the_process_then_calls_main_once():
  (line,) = _run()
  assert line.startswith("main ['positional'] " + ("jemalloc" if JEMALLOC_INSTALLED else "None"))
  assert f"{xla_cpu.FLAG}={xla_cpu.VALUE}" in line


def test_user_choices_win():
  (line,) = _run(VONET_JEMALLOC="0", XLA_FLAGS=f"{xla_cpu.FLAG}=dot")
  assert line == f"main ['positional'] None {xla_cpu.FLAG}=dot"
