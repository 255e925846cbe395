"""Paths the tests share: the project root and the real MOVi-A sample beside the project."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "tfds"  # ships beside the project, never inside it
needs_sample = pytest.mark.skipif(
    not (SAMPLE / "movi_a" / "128x128" / "1.0.0").is_dir(),
    reason=f"MOVi-A sample not found at {SAMPLE} (it ships beside the project, not in it)")
