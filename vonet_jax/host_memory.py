"""Keep freed host memory for reuse instead of returning it to the OS (CPU backend speed).

XLA:CPU allocates each step's buffers (gigabytes at MOVi sizes) with `posix_memalign` from its
worker threads. glibc serves every allocation above 32 MB from a fresh `mmap` and unmaps it when
freed, so each step writes its multi-gigabyte buffers into newly mapped pages: millions of page
faults per step, each zeroing a 4 KB page (MOVi-A at B=4: about 3 s of a 19 s update). With
`retain_freed_memory()` glibc serves them from its main heap and keeps freed memory mapped
(`mallopt`: one arena, no mmap, no trimming), so later steps reuse warm pages: the process keeps
its peak host memory for its lifetime, which a training run reaches anyway.

jemalloc with decay off does the same and more (MOVi-A at B=4: 8.0 s per update against 9.9 s,
and 10.7 against 16.2 s in a slower window of the same machine; README "Performance"); it
avoids glibc's single-arena lock. It also backs its memory with transparent huge pages
(`thp:always`: 2 MB pages where the kernel's THP mode is `madvise` or `always`), which took
MOVi-A B=4 from 10.58 to 9.89 s per update (mean of four interleaved pairs of benchmark runs).
And it uses one arena (`narenas:1`): XLA:CPU's worker threads allocate and free each step's
buffers, whichever thread runs an op, and with jemalloc's default arenas (4 per CPU, each thread
bound to one) the pages a buffer freed on one thread are kept in that thread's arena, unused by
the others: a MOVi-A B=8 training process grew by 0.4 GB per iteration (17.2 GB after 16,
unless purged before every update at about 6 s per iteration), and the by-turns benchmarks grew
until the OOM killer stopped them. With one arena it stays at its peak (11.46 GB at B=8, flat
from the third iteration) with no purge (22.5 s per iteration against 28.3 s with the purge);
B=4 updates 0.45 s slower on average over four interleaved pairs of benchmark runs (-0.2 to
+1.5 s; README "Performance").
`run_under_jemalloc()` restarts a program with it preloaded, as
    LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=<_JEMALLOC_CONF below> python ...
does by hand. `vonet_jax.main` and the benchmarks call it first where jemalloc is installed
(Debian/Ubuntu package `libjemalloc2`); `VONET_JEMALLOC=0` in the environment turns it off.
`retain_freed_memory` leaves the allocator alone when jemalloc (or anything but glibc) is loaded.
"""
import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def retain_freed_memory() -> bool:
  """Configures glibc malloc as the module docstring says; True if it did.

  Call it before jax starts its threads (first thing in a program). A no-op returning False where
  the allocator is not glibc's (another libc, or jemalloc / tcmalloc preloaded).
  """
  name = ctypes.util.find_library("c")
  if name is None:
    return False
  try:
    libc = ctypes.CDLL(name)
  except OSError:
    return False
  if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
    return False
  if preloaded_allocator():
    return False
  # M_TRIM_THRESHOLD -1: never trim (mallopt takes an int; glibc reads it as size_t).
  return all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


_JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always,narenas:1"  # module docstring
_RESTARTED = "VONET_JEMALLOC_RESTARTED"  # set in the restarted process: never restart twice


def run_under_jemalloc() -> None:
  """Restarts this program with jemalloc preloaded (decay off, huge pages), where that helps and
  is possible.

  The same interpreter and command line (`sys.orig_argv`) replace this process (`os.execve`:
  same pid, nothing run yet is lost when called first). Returns without restarting when
  VONET_JEMALLOC=0, when an allocator is already preloaded, when jemalloc is not installed, or
  in the restarted process itself. Call it only in a program's `if __name__ == "__main__":`
  block, before anything else: in an imported module it would restart the importing program.
  """
  if os.environ.get("VONET_JEMALLOC", "1") == "0" or os.environ.get(_RESTARTED):
    return
  if preloaded_allocator():
    return
  library = ctypes.util.find_library("jemalloc")
  if library is None or not sys.platform.startswith("linux"):
    return
  env = dict(os.environ)
  env["LD_PRELOAD"] = " ".join(filter(None, (env.get("LD_PRELOAD"), library)))
  env.setdefault("MALLOC_CONF", _JEMALLOC_CONF)
  env[_RESTARTED] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


_MALLCTL_ARENAS_ALL = 4096  # jemalloc's "every arena" index in mallctl names


def release_freed_memory() -> bool:
  """Returns the allocator's freed pages to the OS; True if it could.

  Both allocators above keep what a program frees, and that includes what XLA's compiler frees
  after compiling a step (at MOVi-A B=8, about 2 GB that the step, which allocates large blocks,
  does not reuse). The training loop calls this right after compiling its update and, if
  `train.release_memory_every` is N > 0, before every N-th update (the next update faults the
  purged pages back in: 1.3-6 s of a 22-28 s MOVi-A B=8 iteration on two cores; with jemalloc's
  default arenas the process grew without it, with one arena it does not: module docstring).
  jemalloc: purge every arena (`mallctl("arena.<all>.purge")`); glibc: `malloc_trim(0)`.
  """
  try:
    process = ctypes.CDLL(None)
  except OSError:
    return False
  if preloaded_allocator() == "jemalloc" and hasattr(process, "mallctl"):
    name = f"arena.{_MALLCTL_ARENAS_ALL}.purge".encode()
    return process.mallctl(name, None, None, None, ctypes.c_size_t(0)) == 0
  if preloaded_allocator() is None and hasattr(process, "malloc_trim"):
    process.malloc_trim(ctypes.c_size_t(0))
    return True
  return False


def preloaded_allocator() -> str | None:
  """The preloaded malloc replacement in this process ("jemalloc", "tcmalloc", "mimalloc"), or
  None (glibc's malloc, or unknown: no /proc)."""
  try:
    with open("/proc/self/maps") as maps:
      text = maps.read()
  except OSError:
    return None
  return next((lib for lib in ("jemalloc", "tcmalloc", "mimalloc") if lib in text), None)
