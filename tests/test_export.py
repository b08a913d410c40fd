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
  # Format 2: every other member's SHA-256, checked by load.
  assert stored["format_version"] == 2
  assert sorted(stored["members"]) == ["config.json",
                                       "extras/calibration_haar.json",
                                       "function.bin", "params.npz"]
  assert stored["manifest_sha256"] == export.manifest_digest(stored)
  landmarker = export.load(path)
  assert landmarker.extras == EXTRAS and landmarker.verified == "sha256"


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


# ------------------------------------------------ hostile artifacts ----
# Built from the committed ready model (format 1), repacked in tmp_path as
# format 2 by `export.write_artifact` (models/ itself is never written).

READY = os.path.join(REPO, "models", "yt68_photo.zip")


def _members(path):
  with zipfile.ZipFile(path) as z:
    return {n: z.read(n) for n in z.namelist()}


def _repack(path, members):
  """A zip of `members` as given (no hashes recomputed), like _write_zip."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    for name, data in members.items():
      z.writestr(name, data)
  return str(path)


@pytest.fixture(scope="module")
def artifact_v2(tmp_path_factory):
  """The ready model's members written as a format 2 artifact."""
  members = _members(READY)
  manifest = json.loads(members.pop("manifest.json"))
  path = str(tmp_path_factory.mktemp("v2") / "model.zip")
  export.write_artifact(path, manifest, members)
  return path


def _snapshot(path):
  return os.stat(path).st_mtime_ns, open(path, "rb").read()


def test_format_2_records_every_members_hash_and_older_format_still_loads(
    artifact_v2):
  members = _members(artifact_v2)
  manifest = json.loads(members["manifest.json"])
  assert manifest["format_version"] == export.FORMAT_VERSION == 2
  assert sorted(manifest["members"]) == sorted(
      m for m in members if m != "manifest.json")
  for name, entry in manifest["members"].items():
    assert entry["sha256"] == __import__("hashlib").sha256(
        members[name]).hexdigest()
    assert entry["size"] == len(members[name])
  assert manifest["manifest_sha256"] == export.manifest_digest(manifest)
  before = _snapshot(READY)
  old, new = export.load(READY), export.load(artifact_v2)
  assert _snapshot(READY) == before            # loading never writes.
  assert json.loads(_members(READY)["manifest.json"])["format_version"] == 1
  assert (old.verified, new.verified) == ("crc32", "sha256")
  assert new.extras == old.extras and len(new.params) == len(old.params)
  crops = np.random.RandomState(0).randint(0, 256, (2, 96, 96, 3), np.uint8)
  np.testing.assert_array_equal(old(crops)["landmarks"],
                                new(crops)["landmarks"])


def _member_data_offset(path, name):
  """Offset of a stored member's first data byte in the zip file."""
  with zipfile.ZipFile(path) as z:
    info = z.getinfo(name)
  with open(path, "rb") as f:
    f.seek(info.header_offset)
    header = f.read(30)
  name_len = int.from_bytes(header[26:28], "little")
  extra_len = int.from_bytes(header[28:30], "little")
  return info.header_offset + 30 + name_len + extra_len, info.file_size


@pytest.mark.parametrize("member", ["manifest.json", "config.json",
                                    "function.bin", "params.npz",
                                    "extras/calibration_haar.json"])
def test_a_flipped_byte_in_any_member_is_named(artifact_v2, tmp_path, member):
  # In the file as stored: the zip's CRC-32 catches it.
  data = bytearray(open(artifact_v2, "rb").read())
  offset, size = _member_data_offset(artifact_v2, member)
  data[offset + size // 2] ^= 0x01
  flipped = tmp_path / "flipped.zip"
  flipped.write_bytes(bytes(data))
  with pytest.raises(export.ArtifactError,
                     match=f"flipped.zip is corrupted: member {member} "
                     ".*re-export it"):
    export.load(str(flipped))
  # Repacked with a valid CRC (a member replaced, or an edit re-zipped):
  # the manifest's SHA-256 catches it.
  members = _members(artifact_v2)
  changed = bytearray(members[member])
  changed[len(changed) // 2] ^= 0x01
  members[member] = bytes(changed)
  path = _repack(tmp_path / "edited.zip", members)
  with pytest.raises(export.ArtifactError) as e:
    export.load(path)
  message = str(e.value)
  assert f"edited.zip is corrupted: member {member}" in message
  if member != "manifest.json":      # A manifest edit may break its JSON.
    assert f"member {member} hash mismatch; re-export it" in message


def test_not_a_zip_truncated_missing_member_future_version(artifact_v2,
                                                           tmp_path):
  data = open(artifact_v2, "rb").read()
  rng = np.random.RandomState(0)
  random_bytes = tmp_path / "random.zip"
  random_bytes.write_bytes(rng.bytes(4096))
  truncated = tmp_path / "truncated.zip"
  truncated.write_bytes(data[:len(data) // 2])
  empty = tmp_path / "empty.zip"
  empty.write_bytes(b"")
  for path in (random_bytes, truncated, empty):
    with pytest.raises(export.ArtifactError, match="not a zip file, or a "
                       "truncated one"):
      export.load(str(path))
  # A member missing: from the required set, or one the manifest lists.
  members = _members(artifact_v2)
  for name in ("params.npz", "extras/calibration_dlib.json"):
    path = _repack(tmp_path / "missing.zip",
                   {k: v for k, v in members.items() if k != name})
    with pytest.raises(export.ArtifactError, match=f"{name}.*missing|missing"
                       f".*{name}"):
      export.load(path)
  # A member the manifest does not list.
  path = _repack(tmp_path / "extra.zip", dict(members, **{
      "extras/sneaky.json": b"{}"}))
  with pytest.raises(export.ArtifactError, match="sneaky.json.*not in its "
                     "manifest"):
    export.load(path)
  # A newer format version (its own digest updated: a real future file).
  manifest = json.loads(members["manifest.json"])
  manifest["format_version"] = export.FORMAT_VERSION + 1
  manifest["manifest_sha256"] = export.manifest_digest(manifest)
  path = _repack(tmp_path / "future.zip", dict(
      members, **{"manifest.json": json.dumps(manifest).encode()}))
  with pytest.raises(export.ArtifactError, match="format version 3; this code "
                     "reads up to 2: update star_jax"):
    export.load(path)
  for version in ("2", None, 0):
    manifest["format_version"] = version
    path = _repack(tmp_path / "odd.zip", dict(
        members, **{"manifest.json": json.dumps(manifest).encode()}))
    with pytest.raises(export.ArtifactError, match="format"):
      export.load(path)


def test_consistent_but_wrong_members_fail_before_deserialising(
    artifact_v2, tmp_path):
  # Hashes recomputed (so the checks pass) over members that do not fit:
  # each is named, never a crash inside jax or numpy.
  members = _members(artifact_v2)
  manifest = json.loads(members.pop("manifest.json"))
  cases = {
      "function.bin": dict(members, **{"function.bin": b"\x00" * 64}),
      "params.npz": dict(members, **{"params.npz": b"PK\x03\x04junk"}),
      "config.json": dict(members, **{"config.json": b"[1, 2"}),
  }
  for name, case in cases.items():
    path = str(tmp_path / f"{name}.zip")
    export.write_artifact(path, manifest, case)
    with pytest.raises(export.ArtifactError, match=f"member {name}"):
      export.load(path)
  # Parameters of another model: named as not matching the function.
  other = __import__("io").BytesIO()
  np.savez(other, p00000=np.zeros(3, np.float32))
  path = str(tmp_path / "other.zip")
  export.write_artifact(path, dict(manifest, param_names=["x"]),
                        dict(members, **{"params.npz": other.getvalue()}))
  with pytest.raises(export.ArtifactError, match="params.npz does not match"):
    export.load(path)


def test_hostile_artifact_through_predict_is_one_error_line(tmp_path, capsys):
  from star_jax import predict  # pylint: disable=g-import-not-at-top
  bad = tmp_path / "model.zip"
  bad.write_bytes(np.random.RandomState(1).bytes(1000))
  image = tmp_path / "in" / "a.png"
  image.parent.mkdir()
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.new("RGB", (40, 40)).save(image)
  code = predict.main(["--checkpoint", str(bad), "--image", str(image),
                       "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("error: ") and "not a zip file" in err
  assert "Traceback" not in err
  assert not (tmp_path / "out").exists()
