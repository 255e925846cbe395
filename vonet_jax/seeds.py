"""The run's seeds: `config.seed`, and the parts of it that can be set apart.

Each part is a config key whose value -1 (the default) means `config.seed`; setting one apart
tells which part decides a run's seed-to-seed differences (README, "What seed 0 has"):
- `model_seed`: the parameters and the train step's own random numbers (dropout, noise);
- `video_order_seed`: the order of the training videos;
- `replay_seed`: which stored segments each update samples from the replay buffer;
- `collection_seed`: the collection's noise (the workers' fresh initial slots).
"""
PARTS = ("model_seed", "video_order_seed", "replay_seed", "collection_seed")


def seed_of(config, part: str) -> int:
  """The seed of one part (a name in PARTS): config[part], or config.seed where that is -1."""
  value = config[part]
  return config.seed if value < 0 else value
