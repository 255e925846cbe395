"""CPU proof of learning on the built-in dataset (2000 iterations at B=16: about an hour alone on 2
CPU cores under jemalloc, evaluations included; see README "Does it learn objects on a CPU?").

    python -m vonet_jax.main --config=configs/synthetic_learn.py --workdir=runs/learn_z2 --mode=train_eval

The same model code with every component on; what it changes against configs/movi_a.py:
- data: built-in MOVi-style videos, 3-5 objects, 600 train / 50 validation videos, 64x64 frames
  (32x32 feature map, 16x16 = 256 dVAE tokens), camera zoom 2 (twice MOVi-A's focal length: the
  middle of the same scenes, objects twice as large in pixels; at zoom 1 and 64x64 an object is
  4-8 pixels, 1-4 dVAE tokens, and a previous version of this config learned no objects);
- model: K=6 slots, slot size 64, backbone 32 channels, feature size 64, MLP hidden 128, 4-level
  U-Net (16, 32, 32, 64) with a 4x4x64 bottleneck and 128-wide bottleneck MLP / mask transformer
  (3 layers, 2 heads of 64), initial-slot and prior transformers of 1 block (2 heads of 32),
  posterior hidden 64, dVAE vocabulary 256 with 32 hidden channels, decoder d_model 64, 2 blocks,
  2 heads, FFN 128;
- training: B=16 segments, 2000 iterations (B=8 until the sixth session: then one seed in three
  learned objects and whether it did followed the replay sampling; at B=16 the two seeds that
  failed learn; `--config.train.batch_size=8` reproduces the earlier runs, 23 min each);
  replay: 8 workers, 2000 steps each, training from 400 stored frames; evaluation on the 50
  validation videos every 250 iterations (and before training, as the untrained reference);
- schedules: the learning-rate schedule is shortened by iterations/150k (warm-up 67, hold to
  1333, decay to 2000). The KL weight beta and the Gumbel temperature tau are *not* shortened:
  they follow the paper's schedules (beta 0 -> 20 over 50k iterations, tau 1 -> 0.1 over 10k), so
  a 2000-iteration run sees beta <= 0.8 and tau >= 0.82, as the first 2000 iterations of the
  authors' run do. Shortening beta too (a previous version of this config) brings it to 20
  before the decoder uses the slots, and the posterior collapses; shortening tau (tau 0.1 from
  iteration 133, the previous version) collapses the dVAE's codebook to 6-9 of its 256 words,
  shared by objects and floor, so the decoder's targets hardly show the objects (README, "Does
  it learn objects on a CPU?");
- learning rates 1e-3 for the main and decoder groups (dVAE 1e-3 as in the paper): Adam moves a
  parameter by about the learning rate per update, so the paper's 150k updates at 1e-4 move
  parameters ~15 units and 2500 updates at 1e-4 only ~0.25; probes at 300 updates showed the
  slot latents of a rollout collapsing to one vector at 2e-4 and staying apart at 1e-3.
"""
from configs import base, synthetic_small


def get_config(iterations: str = "2000"):
  """`--config=configs/synthetic_learn.py:1500` changes the length (schedules scale with it)."""
  config = synthetic_small.get_config()
  config.data.data_dir = "~/tensorflow_datasets/vonet_learn_zoom2"
  config.data.synthetic.num_train_videos = 600
  config.data.synthetic.num_validation_videos = 50
  config.data.synthetic.min_objects = 3
  config.data.synthetic.max_objects = 5
  config.data.synthetic.zoom = 2.0
  config.data.shuffle_buffer = 100
  config.model.num_slots = 6
  config.model.mask_transformer.num_layers = 3
  t = config.train
  t.batch_size = 16
  t.main_lr_peak = 1e-3
  t.decoder_lr = 1e-3
  synthetic_small.shrink_schedules(config, int(iterations))
  paper = base.get_base_config().train
  t.beta_warmup_steps = paper.beta_warmup_steps  # the paper's schedules (docstring)
  t.tau_steps = paper.tau_steps
  config.replay.num_workers = 8
  config.replay.capacity_per_worker = 2000
  config.replay.initial_frames = 400
  config.checkpoint_every = 250
  config.checkpoints_to_keep = 20
  config.log_scalars_every = 50
  config.log_images_every = 500
  config.eval.every = 250
  config.eval.periodic_num_videos = 50
  config.eval.batch_size = 8
  return config
