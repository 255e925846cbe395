"""Tiny config for the test suite: every component on, at toy sizes (32x32 frames, K=3).

Compiles and runs in seconds on a CPU; learns nothing. Used by tests/ only.
"""
from configs import synthetic_small


def get_config():
  config = synthetic_small.get_config()
  config.data.resolution = 32
  config.data.num_frames = 6
  config.data.synthetic.num_train_videos = 4
  config.data.synthetic.num_validation_videos = 2
  config.data.synthetic.max_objects = 3
  m = config.model
  m.num_slots = 3
  m.slot_size = 16
  m.backbone_channels = 8
  m.backbone_blocks = 2
  m.feature_size = 16
  m.mlp_hidden = 32
  m.unet_channels = (8, 16, 16)
  m.unet_fc = 32
  m.mask_transformer.update(num_layers=1, num_heads=2, head_dim=8, mlp_dim=32)
  m.init_transformer.update(num_layers=1, num_heads=2, head_dim=8, mlp_dim=32)
  m.prior_transformer.update(num_layers=1, num_heads=2, head_dim=8, mlp_dim=32)
  m.posterior_hidden = 16
  m.dvae.update(vocab_size=32, hidden=8)
  m.decoder.update(d_model=16, num_heads=2, num_layers=1, ffn_dim=32)
  config.train.batch_size = 2
  synthetic_small.shrink_schedules(config, 8)
  config.replay.num_workers = 2
  config.replay.capacity_per_worker = 16
  config.replay.initial_frames = 4
  config.checkpoint_every = 4
  config.log_scalars_every = 2
  config.log_images_every = 4
  config.eval.batch_size = 2
  config.eval.periodic_num_videos = 2
  return config
