"""Tests of star_jax/export.py: the artifact equals the live model, without it.

The loaded artifact is run in a subprocess whose import system refuses flax,
optax, orbax, ml_collections and every star_jax module except star_jax.export
(and data/, training/), so `load(PATH)(images)` provably needs only jax and
numpy.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import jax
import numpy as np
import pytest

from star_jax import export
from star_jax import inference
from tests import test_inference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROP = test_inference.CROP
BATCHES = (3, 5)


_SHARED = {}


EXTRAS = {"calibration_haar": {"detector": "haar", "offset": [0.0, 0.1]}}


def shared_artifact(tmp_path_factory):
  """(workdir, artifact path, manifest): the shared workdir's best checkpoint
  exported with heatmaps, covariances (the default for heatmap models) and
  EXTRAS for cpu, cuda and tpu; one per test session."""
  if "artifact" not in _SHARED:
    workdir, _, _ = test_inference.shared_workdir(tmp_path_factory)
    path = str(tmp_path_factory.mktemp("export") / "model.zip")
    manifest = export.export_checkpoint(workdir, path, "best",
                                        with_heatmaps=True, extras=EXTRAS)
    _SHARED["artifact"] = (workdir, path, manifest)
  return _SHARED["artifact"]


@pytest.fixture
def exported(tmp_path_factory):
  return shared_artifact(tmp_path_factory)


def _inputs(batch, seed):
  rng = np.random.RandomState(seed)
  images = rng.randint(0, 256, (batch, CROP, CROP, 3), dtype=np.uint8)
  a = rng.uniform(0.5, 3.0, (batch, 2, 2)) + np.eye(2)
  t = rng.uniform(-50.0, 300.0, (batch, 2, 1))
  return images, np.concatenate([a, t], -1).astype(np.float32)


def _live(workdir, images, c2i):
  config, model, variables = inference.load_checkpoint(workdir, "best")
  out = jax.jit(inference.infer, static_argnums=(0, 4, 5, 6, 7))(
      model, variables, images, c2i, False, True, None, True)
  return {k: np.asarray(v) for k, v in out.items()}


_BLOCKED_RUN = textwrap.dedent("""
    import importlib.abc, sys
    import numpy as np
    BLOCKED = ("flax", "optax", "orbax", "ml_collections", "clu", "grain",
               "star_jax.model", "star_jax.method", "star_jax.inference",
               "star_jax.layers", "star_jax.aam", "star_jax.loss", "data",
               "training")
    class Block(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
          raise ImportError("blocked in this test: " + name)
        return None
    sys.meta_path.insert(0, Block())
    from star_jax import export
    landmarker = export.load(sys.argv[1])
    results = {}
    for i, b in enumerate(%(batches)r):
      rng = np.random.RandomState(b)
      images = np.load(sys.argv[2])["images_%%d" %% b]
      c2i = np.load(sys.argv[2])["c2i_%%d" %% b]
      out = landmarker(images, c2i)
      for k, v in out.items():
        results["%%s_%%d" %% (k, b)] = v
      results["plain_%%d" %% b] = landmarker(images)["landmarks"]
    np.savez(sys.argv[3], **results)
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] in ("flax", "optax", "orbax", "data",
                                           "training") or
                    (m.startswith("star_jax.") and m != "star_jax.export"))
    print("LOADED", loaded)
    """) % {"batches": BATCHES}


def test_artifact_equals_live_model_without_model_code(exported, tmp_path):
  workdir, path, _ = exported
  inputs = {}
  for b in BATCHES:
    images, c2i = _inputs(b, b)
    inputs[f"images_{b}"], inputs[f"c2i_{b}"] = images, c2i
  np.savez(tmp_path / "in.npz", **inputs)
  script = tmp_path / "run.py"
  script.write_text(_BLOCKED_RUN)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
      [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if p]))
  proc = subprocess.run(
      [sys.executable, str(script), path, str(tmp_path / "in.npz"),
       str(tmp_path / "out.npz")], capture_output=True, text=True, env=env,
      cwd=str(tmp_path), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "LOADED []" in proc.stdout
  got = np.load(tmp_path / "out.npz")
  for b in BATCHES:
    live = _live(workdir, inputs[f"images_{b}"], inputs[f"c2i_{b}"])
    for k in ("landmarks_crop", "landmarks", "heatmaps", "covariance_crop",
              "covariance"):
      assert got[f"{k}_{b}"].shape == live[k].shape
      np.testing.assert_allclose(got[f"{k}_{b}"], live[k], atol=1e-5,
                                 rtol=1e-6)
    # Original pixels = crop_to_image applied to the crop points (float64).
    c2i = inputs[f"c2i_{b}"].astype(np.float64)
    ref = (np.einsum("bij,bnj->bni", c2i[..., :2], live["landmarks_crop"])
           + c2i[:, None, :, 2])
    np.testing.assert_allclose(got[f"landmarks_{b}"], ref, atol=1e-3)
    # Covariances: A C A^T of the crop ones (float64 reference), symmetric
    # positive definite.
    cov_ref = np.einsum("bij,bnjk,blk->bnil", c2i[..., :2],
                        live["covariance_crop"].astype(np.float64),
                        c2i[..., :2])
    np.testing.assert_allclose(got[f"covariance_{b}"], cov_ref, rtol=1e-4,
                               atol=1e-4)
    assert np.all(np.linalg.eigvalsh(cov_ref) > 0)
    # Without crop_to_image, "landmarks" are the crop points.
    np.testing.assert_allclose(got[f"plain_{b}"], live["landmarks_crop"],
                               atol=1e-5)


def test_homogeneous_crop_maps_and_input_checks(exported):
  _, path, _ = exported
  landmarker = export.load(path)
  images, c2i = _inputs(2, 7)
  c2i_3x3 = np.concatenate([c2i, np.tile([[[0, 0, 1]]], (2, 1, 1))], 1)
  a = landmarker(images, c2i)["landmarks"]
  b = landmarker(images, c2i_3x3)["landmarks"]
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r"\[B, 64, 64, 3\]"):
    landmarker(np.zeros((2, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    landmarker(images.astype(np.float32))
  with pytest.raises(ValueError, match="crop_to_image"):
    landmarker(images, c2i[:1])
  bad = c2i_3x3.copy()
  bad[:, 2, 0] = 1.0
  with pytest.raises(ValueError, match="affine"):
    landmarker(images, bad)


def test_artifact_layout_and_platforms(exported):
  _, path, manifest = exported
  with zipfile.ZipFile(path) as z:
    assert sorted(z.namelist()) == sorted(
        ["manifest.json", "config.json", "function.bin", "params.npz",
         "extras/calibration_haar.json"])
    stored = json.loads(z.read("manifest.json"))
    config = json.loads(z.read("config.json"))
    npz = np.load(__import__("io").BytesIO(z.read("params.npz")))
    assert len(npz.files) == len(stored["param_names"])
  assert stored == json.loads(json.dumps(manifest))
  # Lowered for CPU, CUDA and TPU on this CPU-only machine.
  assert stored["platforms"] == ["cpu", "cuda", "tpu"]
  assert stored["crop_size"] == CROP and stored["num_points"] == 68
  assert stored["outputs"]["landmarks"] == ["b", 68, 2]
  assert stored["outputs"]["heatmaps"] == ["b", 68, CROP // 4, CROP // 4]
  assert stored["source"]["step"] == 1 and stored["source"]["ema"]
  assert config["model"]["width"] == 16 and config["method"] == "star"
  assert stored["with_covariance"] and stored["extras"] == ["calibration_haar"]
  assert stored["outputs"]["covariance"] == ["b", 68, 2, 2]
  assert export.load(path).extras == EXTRAS


def test_cli_raw_params_without_heatmaps(exported, tmp_path, capsys):
  workdir, _, _ = exported
  out = str(tmp_path / "raw.zip")
  assert export.main(["--checkpoint", workdir, "--out", out, "--which",
                      "latest", "--params", "raw", "--platforms", "cpu",
                      "--uncertainty", "off"]) == 0
  assert "wrote" in capsys.readouterr().out
  landmarker = export.load(out)
  assert landmarker.manifest["platforms"] == ["cpu"]
  images, _ = _inputs(2, 3)
  got = landmarker(images)
  assert sorted(got) == ["landmarks", "landmarks_crop"]
  config, model, variables = inference.load_checkpoint(workdir, "latest",
                                                       use_ema=False)
  live = inference.predict_crops(model, variables, images)["landmarks_crop"]
  np.testing.assert_allclose(got["landmarks_crop"], np.asarray(live),
                             atol=1e-5)


def test_clear_errors(tmp_path, capsys):
  with pytest.raises(FileNotFoundError, match="no export artifact"):
    export.load(str(tmp_path / "missing.zip"))
  not_zip = tmp_path / "x.zip"
  not_zip.write_bytes(b"hello")
  with pytest.raises(ValueError, match="not a zip"):
    export.load(str(not_zip))
  other = tmp_path / "other.zip"
  with zipfile.ZipFile(other, "w") as z:
    z.writestr("manifest.json", "{}")
  with pytest.raises(ValueError, match="missing"):
    export.load(str(other))
  assert export.main(["--checkpoint", str(tmp_path / "nope"), "--out",
                      str(tmp_path / "a.zip")]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert not (tmp_path / "a.zip").exists()
