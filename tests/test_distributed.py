"""The same train step on 1 and 4 devices, and training in two processes (jax.distributed)."""
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from tests.paths import ROOT, SAMPLE, needs_sample

FOUR_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    from configs import tiny
    from vonet_jax import optim, sharding, train_step
    assert jax.device_count() == 4
    config = tiny.get_config()
    config.train.batch_size = 4
    optimizer = optim.make_optimizer(config)
    state0 = jax.tree_util.tree_map(
        np.asarray, train_step.init_train_state(config, jax.random.key(0), optimizer))
    rng = np.random.default_rng(0)
    index = np.array([[0, 1, 2], [3, 4, 5], [5, 0, 1], [2, 3, 4]], np.int32)
    batch = dict(frames=rng.integers(0, 256, (4, 3, 32, 32, 3), dtype=np.uint8),
                 state=rng.normal(size=(4, 3, 16)).astype(np.float32),
                 frame_index=index, first=index == 0)
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
      mesh = sharding.make_mesh(devices)
      step = train_step.make_train_step(config, optimizer, mesh)
      state, metrics = step(sharding.replicate(mesh, state0), sharding.global_batch(mesh, batch),
                            sharding.replicate(mesh, np.int32(3)))
      assert len(metrics["loss"].sharding.device_set) == len(devices)
      out[name + "/loss"] = np.asarray(metrics["loss"])
      for path, leaf in jax.tree_util.tree_flatten_with_path(
          dict(params=state.params, batch_stats=state.batch_stats))[0]:
        out[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
    np.savez(OUT, **out)
""")


def test_four_devices_equal_one_device(tmp_path):
  out = tmp_path / "out.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + FOUR_DEVICES], cwd=ROOT,
                 env=env, check=True, timeout=600)
  results = dict(np.load(out))
  one = {k[3:]: v for k, v in results.items() if k.startswith("one")}
  four = {k[4:]: v for k, v in results.items() if k.startswith("four")}
  assert one.keys() == four.keys() and len(one) > 10
  np.testing.assert_allclose(four["/loss"], one["/loss"], rtol=1e-5)
  for key in one:
    np.testing.assert_allclose(four[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)


TWO_PROCESSES = textwrap.dedent("""
    import sys, numpy as np, jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=ADDRESS, num_processes=2, process_id=PID)
    from configs import tiny
    from vonet_jax import sharding, train
    config = tiny.get_config()
    config.data.update(name="movi_a", data_dir=SAMPLE, num_frames=24)
    config.train.num_iterations = 3
    config.eval.every = 3
    result = train.train_and_evaluate(config, WORKDIR)
    params = sharding.to_host(result["state"].params)
    np.savez(OUT, **{jax.tree_util.keystr(p): x
                     for p, x in jax.tree_util.tree_flatten_with_path(params)[0]})
""")


@needs_sample
def test_two_processes_train_and_agree(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  procs = []
  for pid in range(2):
    code = (f"ADDRESS = '127.0.0.1:{port}'\nPID = {pid}\nSAMPLE = {str(SAMPLE)!r}\n"
            f"WORKDIR = {str(tmp_path / 'run')!r}\nOUT = {str(tmp_path / f'p{pid}.npz')!r}\n"
            + TWO_PROCESSES)
    procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                  stderr=subprocess.PIPE, text=True))
  for proc in procs:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
  p0, p1 = dict(np.load(tmp_path / "p0.npz")), dict(np.load(tmp_path / "p1.npz"))
  assert p0.keys() == p1.keys() and len(p0) > 10
  for key in p0:
    np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
