"""How `vonet_jax.main` and the benchmarks start on the host, before their first computation.

`run(main)` replaces `absl.app.run(main)` in a program's `if __name__ == "__main__":` block:
it restarts the program under jemalloc where installed (`host_memory.run_under_jemalloc`), then
runs `main` after `prepare()`. `prepare()` keeps glibc's freed memory for reuse
(`host_memory.retain_freed_memory`, a no-op under jemalloc) and puts XLA:CPU's convolutions and
dots on its Eigen kernels (`xla_cpu.prefer_eigen_kernels`); both must come before jax's first
computation, and an XLA_FLAGS or allocator the user set wins.
"""
from typing import Callable

from absl import app

from vonet_jax import host_memory, xla_cpu


def prepare() -> None:
  """The host settings every entry point wants (module docstring); call before jax computes."""
  host_memory.retain_freed_memory()
  xla_cpu.prefer_eigen_kernels()


def run(main: Callable[[list], None]) -> None:
  """`app.run(main)` under jemalloc where installed, with `prepare()` first."""
  host_memory.run_under_jemalloc()  # restarts this program; returns only where it does not

  def prepared_main(argv):
    prepare()
    main(argv)

  app.run(prepared_main)
