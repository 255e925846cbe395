"""XLA:CPU kernel choice: convolutions and dots on XLA's own (Eigen) kernels instead of YNNPACK's.

jaxlib 0.10's XLA:CPU hands dots, reductions and every convolution to YNNPACK by default
(`--xla_cpu_experimental_ynn_fusion_type`). Its convolutions run on one thread and are slow for
this model's 3x3 convs: a U-Net conv's forward + backward takes 330 ms there against 120 ms on
XLA's Eigen kernels (2 cores), and the backbone + U-Net parts of a MOVi-A B=4 update take 5.3 s
against 2.5 s. Its dots are slower too at this model's thin shapes (width 192): [12288, 192] x
[192, 768] at 81-85 GFLOP/s against 101-140 on Eigen, and MOVi-A B=4 updates on Eigen's dots
were faster in 11 of 16 rounds, by 5 % on average (the two executables alternating in one
process: `experiments/compare_xla_options.py`). `prefer_eigen_kernels()` keeps YNNPACK for
reductions only (`reduce`). Only which kernel computes each convolution and dot changes (float32
results differ by rounding); the flag only concerns the CPU backend, and an XLA_FLAGS that
already sets it is left alone.
"""
import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = "reduce"


def prefer_eigen_kernels() -> bool:
  """Adds `FLAG=VALUE` to the XLA_FLAGS environment variable; True if it did.

  XLA reads XLA_FLAGS when jax starts its backends (the first computation), so call this before
  that. Does nothing (False) when XLA_FLAGS already sets the flag (the user's choice wins) or when
  the backends have started (it would no longer take effect).
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG in flags or _backends_started():
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={VALUE}".strip()
  return True


def _backends_started() -> bool:
  from jax._src import xla_bridge  # jax has no public query for this
  return xla_bridge.backends_are_initialized()
