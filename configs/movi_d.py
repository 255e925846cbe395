"""VONet on MOVi-D (SPEC.md section 1): K=16, B=24, 6-level U-Net (2x2 bottleneck)."""
from configs import base


def get_config():
  config = base.get_base_config()
  config.data.name = "movi_d"
  config.model.num_slots = 16
  config.model.unet_channels = (32, 64, 64, 128, 128, 128)
  config.train.batch_size = 24
  return config
