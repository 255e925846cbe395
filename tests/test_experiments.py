"""The paper-table scripts aggregate existing workdirs (no training) into the right tables."""
import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.paths import ROOT, SAMPLE, needs_sample


def fake_run(root, name, fg_ari, miou):
  path = pathlib.Path(root) / name / "eval" / "7"
  path.mkdir(parents=True)
  (path / "metrics.json").write_text(json.dumps(
      {"across_seeds": {"fg_ari": {"mean": fg_ari}, "miou": {"mean": miou}}}))


def run_module(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True,
                        capture_output=True, text=True).stdout


def test_table1_aggregates_seeds_beside_the_paper(tmp_path):
  fake_run(tmp_path, "movi_a_seed0", 0.8, 0.5)
  fake_run(tmp_path, "movi_a_seed1", 0.9, 0.6)
  out = run_module("experiments.table1", f"--root={tmp_path}", "--datasets=movi_a", "--seeds=2")
  assert "| movi_a | 85.0 ± 5.0 | 91.0 ± 1.5 | 55.0 ± 5.0 | 60.5 ± 2.0 | 2 |" in out
  assert json.loads((tmp_path / "table1.json").read_text())["movi_a"]["fg_ari"] == [0.8, 0.9]


def test_single_frame_aggregates_image_scores_beside_the_paper(tmp_path):
  fake_run(tmp_path, "movi_c_single_seed0", 0.5, 0.4)
  out = run_module("experiments.single_frame", f"--root={tmp_path}", "--datasets=movi_c")
  assert "| dataset | image FG-ARI (ours) | image FG-ARI (paper) |" in out
  assert "| movi_c | 50.0 ± 0.0 | 47.0 | 40.0 ± 0.0 | 36.2 | 1 |" in out
  assert json.loads((tmp_path / "table2.json").read_text())["movi_c"]["miou"] == [0.4]


def test_ablations_aggregate_and_plot(tmp_path):
  fake_run(tmp_path, "movi_a_full_seed0", 0.9, 0.6)
  fake_run(tmp_path, "movi_a_wo_unet_seed0", 0.4, 0.3)
  out = run_module("experiments.ablations", f"--root={tmp_path}", "--datasets=movi_a",
                   "--seeds=1", "--ablations=full,wo_unet")
  assert "| movi_a | wo_unet | 40.0 ± 0.0 | 30.0 ± 0.0 | 1 |" in out
  assert (tmp_path / "ablations_movi_a.png").stat().st_size > 0


def test_learning_curve_plots_the_periodic_evaluations(tmp_path):
  for name, scores in (("a", [0.1, 0.3]), ("b", [0.05, 0.2])):
    (tmp_path / name / "eval").mkdir(parents=True)
    (tmp_path / name / "eval" / "periodic.jsonl").write_text("\n".join(
        json.dumps({"iteration": 250 * i, "fg_ari": {"mean": x}, "miou": {"mean": x / 2}})
        for i, x in enumerate(scores)))
  out_png = tmp_path / "curve.png"
  out = run_module("experiments.learning_curve", f"--runs={tmp_path / 'a'},{tmp_path / 'b'}",
                   "--labels=VONet,wo-UNet", "--colors=C0,C1", f"--out={out_png}")
  assert "VONet [(0, 10.0, 5.0), (250, 30.0, 15.0)]" in out
  assert out_png.stat().st_size > 0


def test_dry_run_prints_the_training_commands():
  out = run_module("experiments.single_frame", "--dry_run", "--datasets=movi_c", "--seeds=1")
  assert "--config.train.segment_length=1" in out and "--config.replay.enabled=False" in out
  assert "--config.eval.independent_frames=True" in out and "configs/movi_c.py" in out


def test_benchmark_parts_times_each_part(tmp_path):
  out_json = tmp_path / "parts.json"
  out = run_module("experiments.benchmark_parts", "--config=configs/tiny.py", "--batch_size=1",
                   "--repeats=1", "--parts=unet,decoder", f"--json_out={out_json}")
  figures = json.loads(out_json.read_text())
  assert figures["frames"] == 3 and list(figures["parts"]) == ["unet", "decoder"]
  for part in figures["parts"].values():
    assert part["seconds"] > 0 and part["gflops"] > 0 and part["gbytes"] > 0
  assert "| unet |" in out and "| decoder |" in out


def test_attention_timing_times_both_attentions_per_slot_count(tmp_path):
  out = run_module("experiments.attention_timing", "--config=configs/tiny.py", "--slots=1,3",
                   "--repeats=1", f"--out_dir={tmp_path}")
  with open(tmp_path / "timing.csv") as f:
    rows = list(csv.DictReader(f))
  assert [int(row["slots"]) for row in rows] == [1, 3]
  for row in rows:
    assert float(row["vonet_parallel_s"]) > 0 and float(row["monet_recurrent_s"]) > 0
  assert (tmp_path / "timing.png").stat().st_size > 0 and "K=  3" in out


def test_benchmark_train_times_an_update_and_reports_peak_memory(tmp_path):
  out_json = tmp_path / "bench.json"
  subprocess.run([sys.executable, "-m", "experiments.benchmark_train", "--config=configs/tiny.py",
                  "--repeats=1", f"--json_out={out_json}"], cwd=ROOT, check=True,
                 capture_output=True)
  figures = json.loads(out_json.read_text())
  assert figures["update_s"] > 0 and figures["collect_s"] > 0 and figures["sample_s"] > 0
  assert len(figures["update_runs_s"]) == 1 and figures["update_runs_s"][0] > 0
  assert figures["memory_gb"]["total"] > 0
  assert 0.1 < figures["peak_rss_gb"] < 64  # a whole jax process, well under the machine
  assert figures["matmul_gflops"] > 0.1 and figures["stream_gbs"] > 0.1  # the window's speed
  assert 0 < figures["update_cores_busy"] <= os.cpu_count() + 0.5


def test_compare_xla_options_alternates_variants_whose_options_take_effect(tmp_path):
  out_json = tmp_path / "compare.json"
  subprocess.run([sys.executable, "-m", "experiments.compare_xla_options",
                  "--config=configs/tiny.py", "--rounds=2", f"--json_out={out_json}",
                  "--options=xla_cpu_experimental_ynn_fusion_type=dot,reduce"], cwd=ROOT,
                 check=True, capture_output=True)
  variants = json.loads(out_json.read_text())["variants"]
  baseline = variants["baseline"]
  ynn_dots = variants["xla_cpu_experimental_ynn_fusion_type=dot,reduce"]
  assert len(baseline["runs_s"]) == len(ynn_dots["runs_s"]) == 2 and baseline["median_s"] > 0
  # The baseline leaves dots to Eigen (`vonet_jax.xla_cpu`); the variant gives them to YNNPACK.
  assert ynn_dots["library_fusions"] > baseline["library_fusions"]


def test_compare_xla_options_spells_enum_lists_as_compile_options():
  from experiments.compare_xla_options import parse_options
  name = "xla_cpu_experimental_ynn_fusion_type"
  assert parse_options(f"{name}=dot, reduce;xla_cpu_use_xnnpack=False") == {
      name: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE", "xla_cpu_use_xnnpack": "False"}
  assert parse_options(f"{name}=") == {name: ""}  # nothing on YNNPACK
  with pytest.raises(ValueError, match="not name=value"):
    parse_options("xla_cpu_use_xnnpack")


def test_compare_revisions_exports_the_old_package_under_its_own_name(tmp_path):
  from experiments.compare_revisions import OLD_PACKAGE, export_package
  export_package("HEAD", tmp_path)
  package = tmp_path / OLD_PACKAGE
  assert (package / "models" / "decoder.py").is_file() and not (tmp_path / "vonet_jax").exists()
  sources = "".join(p.read_text() for p in package.rglob("*.py"))
  assert "from vonet_jax_old.models" in sources and "from vonet_jax." not in sources


@pytest.mark.parametrize("part", [None, "unet"])
def test_compare_revisions_alternates_the_working_tree_and_an_old_revision(tmp_path, part):
  out_json = tmp_path / "compare.json"
  result = subprocess.run([sys.executable, "-m", "experiments.compare_revisions",
                           "--config=configs/tiny.py", "--old=HEAD", "--rounds=2",
                           f"--json_out={out_json}"] + ([f"--part={part}"] if part else []),
                          cwd=ROOT, check=True, capture_output=True, text=True)
  # Each run's line names the process's peak memory so far (by_turns).
  assert re.search(r"round 2 HEAD: [\d.]+ s \(peak resident [\d.]+ GB\)", result.stdout)
  summary = json.loads(out_json.read_text())
  assert summary["part"] == (part or "update") and summary["old"] == "HEAD"
  assert [len(t) for t in summary["runs_s"].values()] == [2, 2]
  assert all(t > 0 for t in summary["median_s"].values())
  assert 0 <= summary["working_tree_faster_in"] <= 2


def test_the_collection_step_runs_as_a_part():
  """`--part=collection` of compare_revisions, profile_ops and cycles_by_library."""
  from configs import tiny
  from experiments.runners import compiled_runner
  config = tiny.get_config()
  r, m = config.replay, config.model
  _, run = compiled_runner(config, "collection")
  r_last, r_in = (np.asarray(a) for a in run())
  assert r_in.shape == (r.num_workers, r.frames_per_iteration, m.num_slots, m.slot_size)
  assert r_last.shape == (r.num_workers, m.num_slots, m.slot_size) and np.isfinite(r_last).all()
  np.testing.assert_array_equal(r_in[:, 0], 0)  # the zero states it was given (no video starts)
  assert np.abs(r_in[:, 1]).max() > 0  # the state after the first frame


@needs_sample
def test_dvae_codebook_trains_the_dvae_and_counts_its_words(tmp_path):
  out_json = tmp_path / "codebook.json"
  run_module("experiments.dvae_codebook", "--config=configs/tiny.py",
             "--config.data.name=movi_a", f"--config.data.data_dir={SAMPLE}",
             "--steps=4", "--every=2", "--train_videos=2", "--val_videos=1",
             f"--json_out={out_json}")
  rows = json.loads(out_json.read_text())
  assert [r["step"] for r in rows] == [0, 2, 4]
  assert rows[0]["tau"] == 1.0 and rows[-1]["tau"] < 1.0
  assert all(1 <= r["words"] and r["mse_hard"] > 0 for r in rows)
  assert rows[-1]["mse_relaxed"] < rows[0]["mse_relaxed"]  # four Adam steps lower the error


def test_profile_ops_sums_the_traced_ops_by_kind_and_module_scope():
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from experiments.profile_ops import op_scopes, profile, tables

  model = nn.Sequential([nn.Dense(256), nn.relu, nn.Dense(8)])  # modules layers_0, layers_2
  x = jnp.ones((512, 128))
  params = model.init(jax.random.key(0), x)
  step = jax.jit(jax.grad(lambda p: model.apply(p, x).sum()))
  compiled = step.lower(params).compile()
  jax.block_until_ready(compiled(params))
  wall_s, events = profile(lambda: compiled(params))
  scopes = op_scopes(compiled.as_text())
  assert wall_s > 0 and events and all(s >= 0 for _, s in events)
  assert {name for name, _ in events} <= set(scopes) | {n for n, _ in events if "copy" in n}
  result = tables(events, scopes, depth=1, top=50)
  assert sum(s for _, s, _ in result["op"]) == pytest.approx(sum(s for _, s in events), abs=1e-3)
  scope_names = {key for key, _, _ in result["scope"]}
  assert {"forward: layers_0", "backward: layers_2"} <= scope_names, scope_names


def test_cycles_by_library_groups_perf_samples_by_the_code_that_spent_them():
  from experiments.cycles_by_library import shares

  pack = "Eigen::internal::gemm_pack_colmajor_block<float, long, Eigen::internal::"
  report = "\n".join([  # `perf report -F sample,dso,sym --field-separator=;` rows
      " 2000       ;[JIT] tid 6963      ;[.] jit_avx512_common_gemm_f32_xbyak_gemm.8",
      " 100        ;[JIT] tid 6963      ;[.] jit_avx2_kernel_sgemm_kern.5",
      " 500        ;libjax_common.so    ;[.] " + pack + "TensorContractionSubMapper<float, long, "
      "0, Eigen::TensorReshapingOp<Eigen::DSizes<long, 2> const, Eigen::TensorImagePatchOp<-1l>>>",
      " 400        ;libjax_common.so    ;[.] " + pack + "TensorContractionSubMapper<float, long, 1>",
      " 300        ;libjax_common.so    ;[.] ynn::sum_k1_fp32_avx512",
      " 200        ;[kernel.kallsyms]   ;[k] clear_page_erms",
      " 91         ;[JIT] tid 6963      ;[.] 0x00007fb6a4c9d23f",
      " 9          ;[JIT] tid 6963      ;[.] 0x00007fb6a4c9d246",
      " 200        ;libjax_common.so    ;[.] Eigen::RunQueue<tsl::thread::EigenEnvironment::Task,"
      " 1024u>::PopBack",
      " 200        ;libc.so.6           ;[.] __memmove_avx512_unaligned_erms",
      "",
      "# a comment line",
  ])
  assert shares(report) == {  # of 4000 samples
      "gemm kernels": 52.5, "operand packing: image patches": 12.5,
      "operand packing: matrices": 10.0, "YNNPACK": 7.5, "OS kernel": 5.0, "Eigen other": 5.0,
      "other": 5.0, "XLA fusions": 2.5}
