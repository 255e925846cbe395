"""Tests of vonet_jax.host_memory: freed large buffers are reused without new page faults."""
import subprocess
import sys

import pytest

_PROBE = """
import ctypes, ctypes.util, resource, sys
from vonet_jax.host_memory import retain_freed_memory
retained = retain_freed_memory() if sys.argv[1] == "retain" else False
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 256 * 2**20  # above glibc's largest mmap threshold (32 MB)

def faults_of_one_buffer():  # malloc, write every byte, free (as XLA:CPU's buffers)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  buffer = libc.malloc(SIZE)
  ctypes.memset(buffer, 1, SIZE)
  libc.free(buffer)
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_one_buffer()
print(retained, faults_of_one_buffer())
"""


def _second_buffer_faults(mode):
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                       check=True).stdout.split()
  return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_buffers_are_reused_without_page_faults():
  retained, faults = _second_buffer_faults("retain")
  if not retained:
    pytest.skip("the allocator is not glibc's malloc")
  _, plain_faults = _second_buffer_faults("plain")
  pages = 256 * 2**20 // 4096
  assert plain_faults > pages // 2  # glibc maps the buffer afresh: one fault per page
  assert faults < pages // 20  # retained: the second buffer reuses the first one's pages
