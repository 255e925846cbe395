"""Tests of vonet_jax.xla_cpu: the flag reaches XLA and takes convolutions off YNNPACK."""
import os
import subprocess
import sys

_PROBE = """
import sys
from vonet_jax import xla_cpu
added = xla_cpu.prefer_eigen_kernels() if sys.argv[1] == "prefer" else False
import jax, jax.numpy as jnp
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
hlo = jax.jit(conv).lower(  # big enough for YNNPACK
    jnp.ones((2, 64, 64, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
late = xla_cpu.prefer_eigen_kernels()  # backends started: must not claim to act
print(added, late, "__ynn_fusion" in hlo)
"""


def _probe(mode, xla_flags=""):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                       check=True, env=env).stdout.split()
  return [word == "True" for word in out]


def test_convolutions_leave_ynnpack():
  added, late, ynn = _probe("prefer")
  assert added and not late
  assert not ynn  # the convolution is XLA's own kernel
  _, late, default_ynn = _probe("plain")
  assert not late  # called after the first computation: too late, and says so
  assert default_ynn  # by default this jaxlib gives it to YNNPACK (the reason for the module)


def test_user_setting_wins():
  added, _, ynn = _probe("prefer", "--xla_cpu_experimental_ynn_fusion_type=dot,reduce,"
                                   "individual_convolution")
  assert not added and ynn
