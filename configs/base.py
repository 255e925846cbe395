"""Shared base of every VONet config: the MOVi-A values of SPEC.md, sections 1-5.

Per-dataset configs import `get_base_config()` and override only what differs. Every size,
switch and schedule of the model and the trainer lives here, never as a literal deep in code.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Parts of `seed` that can be set apart (-1: `seed`; vonet_jax/seeds.py says what each drives).
  config.model_seed = -1
  config.video_order_seed = -1
  config.replay_seed = -1
  config.collection_seed = -1

  # --- Data (SPEC.md section 1) -------------------------------------------------------------
  config.data = ml_collections.ConfigDict()
  config.data.name = "movi_a"            # movi_a..movi_e, or "synthetic" (built-in dataset)
  config.data.data_dir = "gs://kubric-public/tfds"
  config.data.resolution = 128           # frame height = width fed to the model
  config.data.num_frames = 24            # frames per video
  config.data.shuffle_buffer = 256       # videos held for shuffling the training stream
  # Built-in MOVi-style dataset (vonet_jax/data/synthetic.py); used when name == "synthetic".
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.num_train_videos = 200
  config.data.synthetic.num_validation_videos = 20
  config.data.synthetic.min_objects = 3
  config.data.synthetic.max_objects = 10
  config.data.synthetic.seed = 0
  config.data.synthetic.zoom = 1.0  # camera focal length / MOVi-A's; 2 shows objects twice as large

  # --- Model (SPEC.md section 2) ------------------------------------------------------------
  m = config.model = ml_collections.ConfigDict()
  m.resolution = config.data.get_ref("resolution")  # linked: frame size seen by the model
  m.num_slots = 11                       # K
  m.slot_size = 128                      # D, trajectory latent and z size
  m.backbone_channels = 64
  m.backbone_blocks = 5
  m.feature_size = 128                   # channels of the feature map F
  m.mlp_hidden = 256                     # hidden width of context / slot / memory MLPs
  m.unet_channels = (32, 64, 64, 128, 128)
  m.unet_fc = 512                        # bottleneck MLP width = mask transformer model size
  m.use_unet = True                      # False: ablation "wo-UNet" (masks = estimated masks)
  m.unet_zero_output = False             # True: the U-Net's last conv starts at zero, so the
                                         # masks start as the estimated masks (not in the paper)
  m.mask_transformer = ml_collections.ConfigDict(
      dict(num_layers=3, num_heads=3, head_dim=512, mlp_dim=1024))
  m.init_transformer = ml_collections.ConfigDict(
      dict(num_layers=3, num_heads=3, head_dim=128, mlp_dim=256))
  m.prior_transformer = ml_collections.ConfigDict(
      dict(num_layers=2, num_heads=3, head_dim=128, mlp_dim=256))
  m.posterior_hidden = 128
  m.kl_balance = 0.7                     # kappa; 0.5 = ablation "wo-KLBal" (plain KL)
  m.kl_weight_divisor = 1.0              # ablation "KL-/W": beta divided by W
  # Discrete VAE and STEVE-style transformer decoder.
  m.dvae = ml_collections.ConfigDict(
      dict(vocab_size=4096, hidden=64, relu_before_log_softmax=True))
  # causal_blocks: the training self-attention in 16 query blocks of 64 tokens, skipping the fully
  # masked key blocks (exact: the same function and dropout masks; 1 = the plain T x T
  # attention). 16 against 8: the decoder's forward + backward 2-3 % faster at MOVi-A B=4, 32
  # slower (docs/performance_history.md, tenth session).
  # recompute_attention: its backward pass recomputes the softmax output instead of keeping it
  # (exact; less memory, more time: README "Performance"). recompute_blocks: each block's
  # backward pass recomputes the block from its input (the same function, other dropout masks).
  # token_dropout: word dropout on the decoder's input tokens (not in the paper; 0 = off).
  m.decoder = ml_collections.ConfigDict(
      dict(d_model=192, num_heads=4, num_layers=8, ffn_dim=768, dropout=0.1, causal_blocks=16,
           recompute_attention=False, recompute_blocks=False, token_dropout=0.0))
  # Exact speed/memory options (issue "Performance"); see README.
  m.broadcast_conv = "closed_form"       # "closed_form" (exact, fast) or "plain" (3x3 conv)
  m.unet_input = "fused"                 # "fused": U-Net's first conv from the input's parts
                                         # (exact, fast); "plain": build the [B,K,h,w,C] maps
  m.attention_impl = "xla"               # "xla": jax.nn.dot_product_attention; "einsum": plain
  m.conv3x3 = "auto"                     # the backbone's and U-Net's 3x3 convs where nothing
                                         # is differentiated (collection, evaluation): "winograd"
                                         # (F(2x2, 3x3), models/winograd.py; exact but for
                                         # rounding), "direct" (XLA's conv), "auto": winograd on
                                         # the CPU backend, direct elsewhere (cuDNN chooses)
  m.remat = False                        # nn.remat on U-Net and decoder blocks
  m.compute_dtype = "float32"            # "bfloat16": bf16 compute, fp32 params and losses

  # --- Optimisation (SPEC.md section 3) -----------------------------------------------------
  t = config.train = ml_collections.ConfigDict()
  t.batch_size = 32                      # B, global number of segments per update
  t.segment_length = 3                   # T
  t.num_iterations = 150_000             # counted from the start of collection
  t.main_lr_start = 1e-5
  t.main_lr_peak = 1e-4
  t.main_lr_end = 1e-5
  t.main_warmup_steps = 5_000
  t.main_hold_until = 100_000
  t.main_decay_until = 150_000
  t.decoder_lr = 3e-4
  t.dvae_lr = 1e-3
  t.clip_norm = 0.1                      # main and decoder groups; dVAE unclipped
  t.adam_b1 = 0.9
  t.adam_b2 = 0.999
  t.adam_eps = 1e-7
  t.beta_max = 20.0                      # KL weight, linear 0 -> beta_max
  t.beta_warmup_steps = 50_000
  t.tau_start = 1.0                      # Gumbel-softmax temperature, linear
  t.tau_end = 0.1
  t.tau_steps = 10_000
  t.mask_last_frame = True               # code: loss of a video's last frame masked out
  # Random bits of the decoder's dropout masks and the dVAE's Gumbel noise: "threefry" (jax's
  # default) or "rbg" (XLA's RngBitGenerator, keys derived from the step's threefry keys): the
  # same distributions, other numbers. Its bits were 3x cheaper than jax's looped threefry, but
  # XLA:CPU does not fuse them with the masks as it does random_box's unrolled threefry: MOVi-A
  # B=4 11.88 s against 10.24 s by default (README "Performance").
  t.bulk_rng = "threefry"
  # Return the allocator's freed memory to the OS before every N-th update (0: only once, after
  # compiling the update). The same computation. With jemalloc's default arenas the update's and
  # the collection's buffers fragmented what it keeps and MOVi-A B=8 grew by 0.05-0.4 GB per
  # update unless N = 1; with one arena (`host_memory._JEMALLOC_CONF`, `narenas:1`) it stays at
  # 11.46 GB without purging. Each purge costs the page faults of refilling that memory in the
  # next update (B=8: 28.3 s per iteration against 22.5 s without; README "Performance").
  t.release_memory_every = 0

  # --- Replay buffer (SPEC.md section 4) ----------------------------------------------------
  r = config.replay = ml_collections.ConfigDict()
  r.enabled = True                       # False: ablation "wo-Replay"
  r.num_workers = 16
  r.frames_per_iteration = 2
  r.capacity_per_worker = 10_000
  r.initial_frames = 50_000              # training starts once this many frames are stored

  # --- Checkpoints, summaries, evaluation ---------------------------------------------------
  config.checkpoint_every = 1_000
  config.checkpoints_to_keep = 3
  config.log_scalars_every = 100
  config.log_images_every = 5_000
  config.eval = ml_collections.ConfigDict()
  config.eval.every = 10_000             # periodic evaluation during training (0: never)
  config.eval.periodic_num_videos = 32   # validation videos used by periodic evaluation
  config.eval.batch_size = 8             # videos per evaluation batch (global)
  config.eval.seeds = 1                  # --mode=eval repeats with this many noise seeds
  config.eval.mask_threshold = 0.3
  config.eval.num_pictures = 1           # validation videos drawn by --mode=eval
  config.eval.independent_frames = False  # True: Table 2 protocol (frames as separate images)
  config.eval.checkpoint_step = -1       # -1: latest checkpoint
  return config
