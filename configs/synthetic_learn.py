"""CPU proof of learning on the built-in dataset: about 1.5-2 h on 2 CPU cores.

    python -m vonet_jax.main --config=configs/synthetic_learn.py --workdir=runs/learn --mode=train_eval

The same model code with every component on; what it changes against configs/movi_a.py:
- data: built-in MOVi-style videos, 3-5 objects, 600 train / 50 validation videos, 64x64 frames
  (32x32 feature map, 16x16 = 256 dVAE tokens);
- model: K=6 slots, slot size 64, backbone 32 channels, feature size 64, MLP hidden 128, 4-level
  U-Net (16, 32, 32, 64) with a 4x4x64 bottleneck and 128-wide bottleneck MLP / mask transformer
  (3 layers, 2 heads of 64), initial-slot and prior transformers of 1 block (2 heads of 32),
  posterior hidden 64, dVAE vocabulary 256 with 32 hidden channels, decoder d_model 64, 2 blocks,
  2 heads, FFN 128;
- training: B=8 segments, 3000 iterations with every schedule shortened by 3000/150k (warm-up 100,
  hold to 2000, decay to 3000; beta warm-up 1000; tau 200), main peak learning rate 2e-4
  (instead of 1e-4, for the 50x shorter run); replay: 8 workers, 2000 steps each, training from
  400 stored frames; evaluation on the 50 validation videos every 500 iterations (and before
  training, as the untrained reference).
"""
from configs import synthetic_small


def get_config(iterations: str = "3000"):
  """`--config=configs/synthetic_learn.py:1500` shortens the run (schedules scale with it)."""
  config = synthetic_small.get_config()
  config.data.data_dir = "~/tensorflow_datasets/vonet_learn"
  config.data.synthetic.num_train_videos = 600
  config.data.synthetic.num_validation_videos = 50
  config.data.synthetic.min_objects = 3
  config.data.synthetic.max_objects = 5
  config.data.shuffle_buffer = 100
  config.model.num_slots = 6
  config.model.mask_transformer.num_layers = 3
  config.train.batch_size = 8
  config.train.main_lr_peak = 2e-4
  synthetic_small.shrink_schedules(config, int(iterations))
  config.replay.num_workers = 8
  config.replay.capacity_per_worker = 2000
  config.replay.initial_frames = 400
  config.checkpoint_every = 500
  config.log_scalars_every = 50
  config.log_images_every = 500
  config.eval.every = 500
  config.eval.periodic_num_videos = 50
  config.eval.batch_size = 10
  return config
