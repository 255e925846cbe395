"""VONet on MOVi-C (SPEC.md section 1): K=11, B=32, 6-level U-Net (2x2 bottleneck)."""
from configs import base


def get_config():
  config = base.get_base_config()
  config.data.name = "movi_c"
  config.model.num_slots = 11
  config.model.unet_channels = (32, 64, 64, 128, 128, 128)
  config.train.batch_size = 32
  return config
