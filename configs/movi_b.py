"""VONet on MOVi-B (SPEC.md section 1): K=11, B=32, 5-level U-Net."""
from configs import base


def get_config():
  config = base.get_base_config()
  config.data.name = "movi_b"
  return config
