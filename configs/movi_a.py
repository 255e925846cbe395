"""VONet on MOVi-A (SPEC.md section 1): K=11, B=32, 5-level U-Net.

Run: python -m vonet_jax.main --config=configs/movi_a.py --workdir=/tmp/vonet_movi_a
(150k updates; the authors needed about 36 h on 4x RTX 3090.)
"""
from configs import base


def get_config():
  return base.get_base_config()
