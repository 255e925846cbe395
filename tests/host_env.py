"""The environment the host-setup tests give their subprocesses: this one's, without any
allocator or XLA flag a caller (or an earlier jemalloc restart) put there."""
import ctypes.util
import os
import sys

from vonet_jax import host_memory

JEMALLOC_INSTALLED = (ctypes.util.find_library("jemalloc") is not None
                      and sys.platform.startswith("linux"))


def clean_env(*also_drop: str, **env: str) -> dict:
  """os.environ without LD_PRELOAD, MALLOC_CONF, VONET_JEMALLOC, the restart marker and
  `also_drop`, updated with `env`."""
  dropped = ("LD_PRELOAD", "MALLOC_CONF", "VONET_JEMALLOC", host_memory._RESTARTED) + also_drop
  return {k: v for k, v in os.environ.items() if k not in dropped} | env
