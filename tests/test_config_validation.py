"""Bad config values fail with one line naming the key; the shipped configs are valid."""
import jax
import numpy as np
import pytest

from configs import movi_a, movi_b, movi_c, movi_d, movi_e, synthetic_learn, synthetic_small, tiny
from vonet_jax.config_validation import validate_config
from vonet_jax.errors import UserError
from vonet_jax.train_step import model_key


@pytest.mark.parametrize("module", [movi_a, movi_b, movi_c, movi_d, movi_e, synthetic_small,
                                    synthetic_learn, tiny])
def test_shipped_configs_are_valid(module):
  validate_config(module.get_config(), num_devices=1)


@pytest.mark.parametrize("key,value,devices,expected", [
    ("data.name", "movi_z", 1, "config.data.name: unknown dataset 'movi_z'"),
    ("model.num_slots", 0, 1, "config.model.num_slots: must be >= 1"),
    ("train.batch_size", 30, 4, "config.train.batch_size: 30 is not divisible by the 4 devices"),
    ("data.resolution", 100, 1, "config.data.resolution: 100 is not supported"),
    ("model.kl_balance", 1.5, 1, "config.model.kl_balance"),
    ("replay.initial_frames", 10**9, 1, "config.replay.initial_frames"),
    ("train.bulk_rng", "philox", 1, "config.train.bulk_rng: use 'threefry' or 'rbg'"),
])
def test_bad_values_name_the_key(key, value, devices, expected):
  config = movi_a.get_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(UserError) as error:
    validate_config(config, num_devices=devices)
  message = str(error.value)
  assert message.startswith(expected) and "\n" not in message


def test_too_many_unet_levels_for_the_resolution():
  config = movi_d.get_config()
  config.data.resolution = 32  # 16x16 feature map cannot be pooled 5 times
  with pytest.raises(UserError, match="config.model.unet_channels"):
    validate_config(config)


def test_model_and_video_order_seeds_default_to_seed_and_reject_other_negatives():
  config = tiny.get_config()
  config.seed = 3
  same = lambda key, seed: np.array_equal(jax.random.key_data(key),
                                          jax.random.key_data(jax.random.key(seed)))
  assert same(model_key(config), 3)
  config.model_seed = 5
  assert same(model_key(config), 5) and config.seed == 3
  for key in ("model_seed", "video_order_seed"):
    bad = tiny.get_config()
    bad[key] = -2
    with pytest.raises(UserError, match=rf"^config.{key}: must be a seed >= 0"):
      validate_config(bad)
