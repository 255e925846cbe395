"""Small CPU config on the built-in MOVi-style dataset: the README's main command.

    python -m vonet_jax.main --config=configs/synthetic_small.py --workdir=/tmp/vonet_small

Same model code with every component on, shrunk for a 2-core laptop CPU (minutes, not days):
64x64 frames (32x32 feature map), K=5 slots, 4-level U-Net (16,32,32,64) with a 4x4x64 bottleneck
and 128-wide bottleneck MLP / mask transformer, slot size 64, a 256-word dVAE vocabulary
(16x16 = 256 tokens per frame), a 2-block 64-wide decoder, B=8 segments, 4 replay workers,
schedules shortened proportionally to `num_iterations`. It demonstrates the whole pipeline; it
is far too short to learn objects (see configs/synthetic_learn.py).
"""
from configs import base


def shrink_schedules(config, num_iterations):
  """Scales every iteration-counted schedule of SPEC.md section 3 to `num_iterations`."""
  t = config.train
  scale = num_iterations / t.num_iterations
  t.num_iterations = num_iterations
  for key in ("main_warmup_steps", "main_hold_until", "main_decay_until",
              "beta_warmup_steps", "tau_steps"):
    t[key] = max(1, int(round(t[key] * scale)))


def get_config():
  config = base.get_base_config()
  config.data.name = "synthetic"
  config.data.data_dir = "~/tensorflow_datasets"
  config.data.resolution = 64
  config.data.shuffle_buffer = 32
  config.data.synthetic.num_train_videos = 40
  config.data.synthetic.num_validation_videos = 8
  config.data.synthetic.min_objects = 3
  config.data.synthetic.max_objects = 5

  m = config.model
  m.num_slots = 5
  m.slot_size = 64
  m.backbone_channels = 32
  m.feature_size = 64
  m.mlp_hidden = 128
  m.unet_channels = (16, 32, 32, 64)
  m.unet_fc = 128
  m.mask_transformer.update(num_heads=2, head_dim=64, mlp_dim=256)
  m.init_transformer.update(num_layers=1, num_heads=2, head_dim=32, mlp_dim=128)
  m.prior_transformer.update(num_layers=1, num_heads=2, head_dim=32, mlp_dim=128)
  m.posterior_hidden = 64
  m.dvae.update(vocab_size=256, hidden=32)
  m.decoder.update(d_model=64, num_heads=2, num_layers=2, ffn_dim=128,
                   causal_blocks=8)  # blocks of 32 of the 256 tokens

  t = config.train
  t.batch_size = 8
  shrink_schedules(config, 300)

  config.replay.num_workers = 4
  config.replay.capacity_per_worker = 200
  config.replay.initial_frames = 64

  config.checkpoint_every = 100
  config.log_scalars_every = 20
  config.log_images_every = 100
  config.eval.every = 0
  config.eval.periodic_num_videos = 4
  config.eval.batch_size = 4
  return config
