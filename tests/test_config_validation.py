"""Bad config values fail with one line naming the key; the shipped configs are valid."""
import jax
import numpy as np
import pytest

from configs import movi_a, movi_b, movi_c, movi_d, movi_e, synthetic_learn, synthetic_small, tiny
from vonet_jax import seeds, train
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
    ("model.conv3x3", "fft", 1, "config.model.conv3x3: use 'auto', 'winograd' or 'direct'"),
    ("train.release_memory_every", -1, 1, "config.train.release_memory_every: must be >= 0"),
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


def test_seed_parts_default_to_seed_and_reject_other_negatives():
  config = tiny.get_config()
  config.seed = 3
  same = lambda key, seed: np.array_equal(jax.random.key_data(key),
                                          jax.random.key_data(jax.random.key(seed)))
  assert same(model_key(config), 3)
  assert [seeds.seed_of(config, part) for part in seeds.PARTS] == [3] * len(seeds.PARTS)
  for i, part in enumerate(seeds.PARTS):
    config[part] = 10 + i
  assert same(model_key(config), 10) and config.seed == 3
  assert [seeds.seed_of(config, part) for part in seeds.PARTS] == [10, 11, 12, 13]
  # The replay sampling and the collection's noise follow their parts: as seeds 12 and 13 do.
  seed_12, seed_13 = tiny.get_config(), tiny.get_config()
  seed_12.seed, seed_13.seed = 12, 13
  assert np.array_equal(train._host_rng(config, 7).integers(1 << 30, size=4),
                        train._host_rng(seed_12, 7).integers(1 << 30, size=4))
  assert np.array_equal(jax.random.key_data(train._collection_key(config)),
                        jax.random.key_data(train._collection_key(seed_13)))
  assert not np.array_equal(jax.random.key_data(train._collection_key(config)),
                            jax.random.key_data(train._collection_key(seed_12)))
  for key in seeds.PARTS:
    bad = tiny.get_config()
    bad[key] = -2
    with pytest.raises(UserError, match=rf"^config.{key}: must be a seed >= 0"):
      validate_config(bad)
