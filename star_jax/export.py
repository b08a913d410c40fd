r"""A self-contained inference artifact: jax.export function, params, config.

  python -m star_jax.export --checkpoint runs/yt68_star --out yt68_star.zip \
      [--which best|latest] [--params auto|ema|raw] [--with_heatmaps] \
      [--platforms cpu,cuda,tpu] [--flip_test config|on|off]

  from star_jax import export
  landmarker = export.load("yt68_star.zip")     # needs jax + numpy only
  out = landmarker(crops)                       # uint8 RGB [B, S, S, 3]
  out["landmarks_crop"]                         # [B, N, 2] crop pixels
  out = landmarker(crops, crop_to_image)        # [B, 2, 3] or [B, 3, 3]
  out["landmarks"]                              # [B, N, 2] original pixels

The artifact is ONE file, a zip archive (stored, not compressed) with:

  manifest.json   format name/version, jax version, platforms, crop size S,
                  point count N, outputs, parameter names (key paths), the
                  checkpoint it came from; since format version 2 also
                  "members" (the SHA-256 and size of every other member)
                  and "manifest_sha256" (of the manifest itself, see
                  `manifest_digest`).
  config.json     the training config (as stored in the checkpoint).
  function.bin    `jax.export.Exported.serialize()` of
                  `f(params, images, crop_to_image) -> dict` with a symbolic
                  batch size b: images uint8 `[b, S, S, 3]`, crop_to_image
                  float32 `[b, 2, 3]`; outputs float32 "landmarks_crop"
                  `[b, N, 2]`, "landmarks" `[b, N, 2]` (crop_to_image applied)
                  and, with --with_heatmaps, "heatmaps" `[b, N, S/4, S/4]`.
                  `params` is a flat list of arrays (no framework pytrees).
  params.npz      those arrays, `p00000`, `p00001`, ... in argument order.

Serialization needs the `flatbuffers` package (jax's own optional
dependency for `jax.export.serialize` / `deserialize`).

`load` imports only json / zipfile / numpy / jax: no flax, no star_jax model
code (tested in a subprocess that blocks those imports), so a user can also
read the zip by hand:

  exp = jax.export.deserialize(bytearray(zip.read("function.bin")))
  params = [npz[f"p{i:05d}"] for i in range(len(npz.files))]
  exp.call(params, images, crop_to_image)

The decoder inside is the evaluation path's (`star_jax.inference.infer` ->
`star_jax.method.decode_predictions`, and `flip_test_average` when the
config's `eval.flip_test` is on or `--flip_test on`), traced once at export.

Loading checks before it deserialises anything (`load`): the file is a
zip; every member is present, listed once, within `MAX_MEMBER_BYTES` and
passes its zip CRC-32; the format name and version are known; the manifest
and every member match their SHA-256 (format 2); the members parse (JSON,
.npz without pickles, parameters named and shaped as the function expects).
Each failure is an `ArtifactError` (a `training.errors.UserError`, so the
command-line tools print `error: ...` and exit 2) naming the artifact and
the member: "artifact X is corrupted: member Y hash mismatch; re-export
it". Format 1 artifacts (no hashes, e.g. models/yt68_photo.zip) still load:
their members are checked by the zip's CRC-32 only (the loaded
`ExportedLandmarker.verified` says which check ran; a note is logged at
INFO level).

Platforms: the function is lowered for every platform in --platforms without
needing that hardware (`jax.export.export(..., platforms=...)`); the default
cpu,cuda,tpu works for this model with jax 0.10.2 on a CPU-only machine (the
network is convolutions, reductions and elementwise ops, no custom calls). It
was executed here on CPU only. A serialized function can be loaded by the
same or a newer jax within jax's export compatibility window (see the jax
docs "Exporting and serializing staged-out computations").
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import zipfile
from typing import Dict, Optional, Sequence

import jax
import numpy as np

try:  # The project's user errors: run.py and the CLIs print them, exit 2.
  from training.errors import MissingInputError, UserError
except ImportError:  # export.py used on its own (load needs jax + numpy only).

  class UserError(ValueError):
    """An error the user fixes (as training.errors.UserError)."""

  class MissingInputError(UserError, FileNotFoundError):
    """A missing file (as training.errors.MissingInputError)."""


class ArtifactError(UserError):
  """An artifact that is not a readable star_jax export (names the member)."""


FORMAT = "star_jax.export"
# 1: the first format; 2: manifest "members" (per-member SHA-256 and size)
# and "manifest_sha256". `load` reads both.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# A member larger than this is refused before it is read (a zip whose header
# claims gigabytes: a damaged file, or a zip bomb).
MAX_MEMBER_BYTES = 4 << 30
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
_MEMBERS = ("manifest.json", "config.json", "function.bin", "params.npz")
_NPZ_DTYPES = tuple(np.dtype(t) for t in (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool"))


# -------------------------------------------------------------- export ----

def export_model(config, model, variables, out_path: str, *,
                 with_heatmaps: bool = False,
                 platforms: Sequence[str] = DEFAULT_PLATFORMS,
                 flip_test: Optional[bool] = None,
                 source: Optional[dict] = None,
                 with_covariance: bool = False,
                 extras: Optional[Dict[str, dict]] = None) -> dict:
  """Serializes a model + variables + config into the artifact at `out_path`.

  Args:
    config: the training ConfigDict (or dict) the model was built from.
    model: the StackedHourglass.
    variables: `{"params": ..., **model_state}` (host or device arrays).
    out_path: the zip file to write (its folder must exist).
    with_heatmaps: also output the last stack's heatmaps.
    platforms: jax platforms to lower for ("cpu", "cuda", "tpu", "rocm").
    flip_test: horizontal-flip test-time augmentation inside the function;
      None = the config's `eval.flip_test` (as its evaluation).
    source: provenance stored in the manifest (checkpoint path, step, ...).
    with_covariance: also output each landmark's heatmap covariance
      ("covariance_crop", "covariance": `[B, N, 2, 2]`, pixels squared).
    extras: name -> JSON dict stored as `extras/<name>.json` (e.g. a face
      detector's box calibration, `landmarks.box_calibration`).

  Returns:
    The manifest dict.
  """
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top
  from star_jax import inference  # pylint: disable=g-import-not-at-top
  from training import checkpoints  # pylint: disable=g-import-not-at-top

  _require_flatbuffers()
  config_dict = checkpoints.config_to_dict(config)
  crop_size = int(config_dict["data"]["crop_size"])
  align_corners = bool(config_dict.get("loss", {}).get("align_corners", False))
  flip_permutation = inference.flip_permutation_for(config_dict, flip_test)
  platforms = tuple(platforms)
  if not platforms:
    raise ValueError("platforms must name at least one of cpu, cuda, tpu, rocm")

  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(variables)
  names = [jax.tree_util.keystr(p) for p, _ in leaves_with_path]
  leaves = [np.asarray(v) for _, v in leaves_with_path]
  for name, leaf in zip(names, leaves):
    if leaf.dtype not in _NPZ_DTYPES:
      raise ValueError(f"parameter {name} has dtype {leaf.dtype}, which .npz "
                       "cannot store portably; cast it to float32")

  def fn(flat_params, images, crop_to_image):
    variables = jax.tree_util.tree_unflatten(treedef, flat_params)
    return inference.infer(model, variables, images, crop_to_image,
                           align_corners, with_heatmaps, flip_permutation,
                           with_covariance)

  b, = jax_export.symbolic_shape("b")
  specs = ([jax.ShapeDtypeStruct(l.shape, l.dtype) for l in leaves],
           jax.ShapeDtypeStruct((b, crop_size, crop_size, 3), np.uint8),
           jax.ShapeDtypeStruct((b, 2, 3), np.float32))
  try:
    exported = jax_export.export(jax.jit(fn), platforms=platforms)(*specs)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"jax.export could not lower the model for platforms {platforms}: "
        f"{e}\nTry --platforms=cpu (or the platform you will run on).") from e
  out_avals = jax.tree_util.tree_unflatten(exported.out_tree,
                                           exported.out_avals)
  out_shapes = {k: [d if isinstance(d, int) else str(d) for d in v.shape]
                for k, v in out_avals.items()}
  manifest = {
      "format": FORMAT, "format_version": FORMAT_VERSION,
      "jax_version": jax.__version__,
      "platforms": list(exported.platforms),
      "crop_size": crop_size,
      "num_points": int(model.num_points),
      "align_corners": align_corners,
      "input_bgr": bool(getattr(model, "input_bgr", False)),
      "inputs": {"images": ["b", crop_size, crop_size, 3, "uint8 RGB"],
                 "crop_to_image": ["b", 2, 3, "float32"]},
      "outputs": out_shapes,
      "with_heatmaps": bool(with_heatmaps),
      "with_covariance": bool(with_covariance),
      "extras": sorted(extras or {}),
      "flip_test": flip_permutation is not None,
      "param_names": names,
      "source": dict(source or {}),
      "coordinates": ("(x, y) pixels, origin top-left, pixel centres at "
                      "integers (README 'Conventions')"),
  }
  params_bytes = io.BytesIO()
  np.savez(params_bytes, **{f"p{i:05d}": l for i, l in enumerate(leaves)})
  return write_artifact(out_path, manifest, {
      "config.json": json.dumps(config_dict, indent=2, sort_keys=True).encode(),
      "function.bin": bytes(exported.serialize()),
      "params.npz": params_bytes.getvalue(),
      **{f"extras/{name}.json": json.dumps(value, indent=1).encode()
         for name, value in (extras or {}).items()}})


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def manifest_digest(manifest: dict) -> str:
  """SHA-256 of the manifest without its "manifest_sha256" entry.

  Taken over canonical JSON (sorted keys, no spaces), so it does not depend
  on how the manifest file is laid out, only on its content.
  """
  content = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
  return _sha256(json.dumps(content, sort_keys=True,
                            separators=(",", ":")).encode())


def write_artifact(out_path: str, manifest: dict,
                   members: Dict[str, bytes]) -> dict:
  """Writes the artifact zip: `members` plus manifest.json with their hashes.

  The manifest gets format name and version, "members" (`{name: {"sha256",
  "size"}}` of every member but itself) and "manifest_sha256"
  (`manifest_digest`). Returns that manifest.
  """
  manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION)
  manifest["members"] = {name: {"sha256": _sha256(data), "size": len(data)}
                         for name, data in sorted(members.items())}
  manifest["manifest_sha256"] = manifest_digest(manifest)
  _write_zip(out_path, {"manifest.json": json.dumps(manifest,
                                                    indent=2).encode(),
                        **members})
  return manifest


def _require_flatbuffers() -> None:
  """jax.export (de)serialization needs the `flatbuffers` package."""
  try:
    import flatbuffers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ImportError(
        "jax.export serialization needs the 'flatbuffers' package, which is "
        "not installed: pip install flatbuffers (listed in requirements.txt)"
    ) from None


def _write_zip(path: str, members: Dict[str, bytes]) -> None:
  """Writes the archive atomically (a temporary file, then a rename)."""
  if os.path.isdir(path):
    raise ValueError(f"--out {path} is a folder; the artifact is one file, "
                     "e.g. --out model.zip")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"output folder {folder} does not exist; create it "
                            "first")
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".export-", suffix=".zip")
  os.close(fd)
  try:
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
      for name, data in members.items():
        z.writestr(name, data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def export_checkpoint(checkpoint_dir: str, out_path: str, which: str = "best",
                      use_ema: Optional[bool] = None,
                      with_heatmaps: bool = False,
                      platforms: Sequence[str] = DEFAULT_PLATFORMS,
                      flip_test: Optional[bool] = None,
                      with_covariance: Optional[bool] = None,
                      extras: Optional[Dict[str, dict]] = None) -> dict:
  """Loads a training workdir (`inference.load_checkpoint`) and exports it.

  with_covariance None: on for heatmap models, off for a regression head.
  """
  from star_jax import inference  # pylint: disable=g-import-not-at-top
  config, model, variables, info = inference.load_checkpoint(
      checkpoint_dir, which, use_ema=use_ema, with_info=True)
  if with_covariance is None:
    with_covariance = config.model.get("head", "heatmap") != "regression"
  return export_model(config, model, variables, out_path,
                      with_heatmaps=with_heatmaps, platforms=platforms,
                      flip_test=flip_test, source=info,
                      with_covariance=with_covariance, extras=extras)


def read_extras(specs: Sequence[str]) -> Dict[str, dict]:
  """`NAME=FILE.json` strings -> {NAME: the JSON object} (ValueError if bad)."""
  extras = {}
  for spec in specs:
    name, sep, path = str(spec).partition("=")
    if not sep or not name or not path:
      raise ValueError(f"--extra {spec!r}: expected NAME=FILE.json, e.g. "
                       "--extra calibration_haar=calib.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"--extra {spec}: {path} does not exist")
    with open(path) as f:
      try:
        extras[name] = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"--extra {spec}: {path} is not JSON ({e})") from None
  return extras


# ---------------------------------------------------------------- load ----

class ExportedLandmarker:
  """The loaded artifact: call it on crops. Needs only jax and numpy.

  Attributes:
    manifest: the manifest dict; config: the training config dict;
    crop_size: S; num_points: N; exported: the `jax.export.Exported`;
    params: the flat parameter list (device arrays); extras: name -> JSON
    dict stored beside the model (e.g. a detector calibration); verified:
    how `load` checked the members, "sha256" (format 2) or "crc32" (format
    1, no hashes stored).
  """

  def __init__(self, manifest: dict, config: dict, exported, params):
    self.manifest = manifest
    self.config = config
    self.crop_size = int(manifest["crop_size"])
    self.num_points = int(manifest["num_points"])
    self.exported = exported
    self.params = params
    self.extras = {}   # name -> JSON dict (extras/<name>.json), set by load.
    # How load checked the members: "sha256" (format 2) or "crc32" (format 1).
    self.verified = None
    self._call = jax.jit(exported.call)

  def __call__(self, images, crop_to_image=None) -> Dict[str, np.ndarray]:
    """Predicts landmarks on crops.

    Args:
      images: uint8 RGB `[B, S, S, 3]` crops (S = self.crop_size).
      crop_to_image: optional `[B, 2, 3]` (or `[B, 3, 3]` homogeneous) affine
        maps from crop pixels to original pixels (the data layer's
        `crop_to_image`); identity when omitted.

    Returns:
      numpy float32 "landmarks_crop" `[B, N, 2]`, "landmarks" `[B, N, 2]`
      (original pixels; equal to landmarks_crop without crop_to_image) and,
      if exported with heatmaps, "heatmaps" `[B, N, S/4, S/4]`.
    """
    images = np.asarray(images)
    s = self.crop_size
    if images.ndim != 4 or images.shape[1:] != (s, s, 3):
      raise ValueError(f"images must be RGB crops [B, {s}, {s}, 3] (this "
                       f"artifact's crop size), got shape {images.shape}")
    if images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
    b = images.shape[0]
    if crop_to_image is None:
      c2i = np.tile(np.eye(2, 3, dtype=np.float32), (b, 1, 1))
    else:
      c2i = np.asarray(crop_to_image, np.float64)
      if c2i.shape == (b, 3, 3):
        if not np.allclose(c2i[:, 2], [0.0, 0.0, 1.0]):
          raise ValueError("crop_to_image [B, 3, 3] must be affine (last row "
                           "0, 0, 1)")
        c2i = c2i[:, :2]
      if c2i.shape != (b, 2, 3):
        raise ValueError(f"crop_to_image must be [B, 2, 3] or [B, 3, 3] with "
                         f"B = {b}, got shape {c2i.shape}")
      c2i = c2i.astype(np.float32)
    out = self._call(self.params, images, c2i)
    return {k: np.asarray(v) for k, v in out.items()}


def _corrupted(path: str, member: str, what: str) -> ArtifactError:
  return ArtifactError(f"artifact {path} is corrupted: member {member} "
                       f"{what}; re-export it (python -m star_jax.export)")


def _read_members(path: str) -> Dict[str, bytes]:
  """Every member's bytes; ArtifactError for anything but a sound zip."""
  try:
    with zipfile.ZipFile(path) as z:
      infos = z.infolist()
      names = [i.filename for i in infos]
      repeated = sorted({n for n in names if names.count(n) > 1})
      if repeated:
        raise ArtifactError(f"artifact {path} is corrupted: members "
                            f"{repeated} appear more than once; re-export it")
      missing = [m for m in _MEMBERS if m not in names]
      if missing:
        raise ArtifactError(f"{path} is a zip but not a star_jax export "
                            f"artifact (missing {missing})")
      members = {}
      for info in infos:
        if info.is_dir():
          continue
        if info.file_size > MAX_MEMBER_BYTES:
          raise _corrupted(path, info.filename,
                           f"claims {info.file_size} bytes (more than "
                           f"{MAX_MEMBER_BYTES})")
        try:
          members[info.filename] = z.read(info)
        except Exception as e:  # BadZipFile (CRC), zlib.error, EOFError...
          raise _corrupted(path, info.filename,
                           f"cannot be read ({type(e).__name__}: {e})") from e
      return members
  except zipfile.BadZipFile as e:
    raise ArtifactError(f"{path} is not a star_jax export artifact (not a "
                        f"zip file, or a truncated one: {e})") from e
  except OSError as e:
    raise ArtifactError(f"cannot read artifact {path}: "
                        f"{e.strerror or e}") from e


def _json_member(path: str, members: Dict[str, bytes], name: str) -> dict:
  try:
    value = json.loads(members[name].decode("utf-8"))
  except (UnicodeDecodeError, ValueError, RecursionError) as e:
    raise _corrupted(path, name, f"is not JSON ({type(e).__name__}: "
                     f"{e})") from e
  if not isinstance(value, dict):
    raise _corrupted(path, name, f"holds a JSON {type(value).__name__}, "
                     "expected an object")
  return value


def _check_format(path: str, manifest: dict) -> int:
  """The manifest's format version; ArtifactError unless it is readable."""
  if manifest.get("format") != FORMAT:
    raise ArtifactError(f"{path}: manifest format "
                        f"{manifest.get('format')!r}, expected {FORMAT!r}")
  version = manifest.get("format_version")
  if isinstance(version, bool) or not isinstance(version, int):
    raise _corrupted(path, "manifest.json",
                     f"has format_version {version!r}, expected an integer")
  if version > FORMAT_VERSION:
    raise ArtifactError(f"{path} has format version {version}; this code "
                        f"reads up to {FORMAT_VERSION}: update star_jax")
  if version not in READABLE_VERSIONS:
    raise ArtifactError(f"{path} has format version {version}; this code "
                        f"reads versions {list(READABLE_VERSIONS)}")
  return version


def _check_hashes(path: str, manifest: dict, members: Dict[str, bytes]
                  ) -> None:
  """Format 2: the manifest and every member match their recorded SHA-256."""
  if manifest.get("manifest_sha256") != manifest_digest(manifest):
    raise _corrupted(path, "manifest.json", "hash mismatch")
  listed = manifest.get("members")
  if not isinstance(listed, dict):
    raise _corrupted(path, "manifest.json", "has no member hashes")
  unlisted = sorted(set(members) - set(listed) - {"manifest.json"})
  if unlisted:
    raise ArtifactError(f"artifact {path} is corrupted: members {unlisted} "
                        "are not in its manifest; re-export it")
  for name, entry in sorted(listed.items()):
    if name not in members:
      raise ArtifactError(f"artifact {path} is corrupted: member {name} is "
                          "missing; re-export it")
    if (not isinstance(entry, dict) or
        entry.get("sha256") != _sha256(members[name])):
      raise _corrupted(path, name, "hash mismatch")


def _params(path: str, manifest: dict, data: bytes) -> list:
  """The flat parameter list of params.npz (no pickles), in argument order."""
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      names = sorted(npz.files)
      expected = [f"p{i:05d}" for i in range(len(names))]
      if names != expected:
        raise _corrupted(path, "params.npz", f"holds arrays {names[:3]}..., "
                         "expected p00000, p00001, ...")
      params = [npz[n] for n in expected]
  except ArtifactError:
    raise
  except Exception as e:  # np.load: BadZipFile, ValueError, EOFError...
    raise _corrupted(path, "params.npz", f"is not a readable .npz "
                     f"({type(e).__name__}: {e})") from e
  names = manifest.get("param_names")
  if isinstance(names, list) and len(names) != len(params):
    raise _corrupted(path, "params.npz", f"holds {len(params)} arrays, the "
                     f"manifest names {len(names)}")
  return params


def load(path: str) -> ExportedLandmarker:
  """Loads an artifact written by `export_model` (jax + numpy only).

  Everything is checked before the function is deserialised (module
  docstring); format 1 artifacts load with CRC-32 checks only.

  Raises:
    MissingInputError (a FileNotFoundError): no such file.
    ArtifactError (a UserError, a ValueError): not a zip, a member missing,
      unreadable or failing its hash, an unknown or newer format version, or
      a function jax cannot deserialise; the message names the member.
  """
  if not os.path.isfile(path):
    raise MissingInputError(f"no export artifact at {path}; write one with "
                            "python -m star_jax.export --checkpoint DIR "
                            f"--out {path}")
  members = _read_members(path)
  manifest = _json_member(path, members, "manifest.json")
  version = _check_format(path, manifest)
  if version >= 2:
    _check_hashes(path, manifest, members)
    verified = "sha256"
  else:
    logging.info("%s: format version 1 artifact: no member hashes, members "
                 "checked by the zip's CRC-32 only (re-export for SHA-256 "
                 "checks)", path)
    verified = "crc32"
  for key in ("crop_size", "num_points"):
    value = manifest.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise _corrupted(path, "manifest.json", f"has {key} {value!r}, expected "
                       "a positive integer")
  config = _json_member(path, members, "config.json")
  extras = {m[len("extras/"):-len(".json")]: _json_member(path, members, m)
            for m in sorted(members)
            if m.startswith("extras/") and m.endswith(".json")}
  params = _params(path, manifest, members["params.npz"])
  _require_flatbuffers()
  try:
    exported = jax.export.deserialize(bytearray(members["function.bin"]))
  except Exception as e:  # flatbuffers / jax raise many types.
    raise _corrupted(
        path, "function.bin",
        f"cannot be deserialised by jax {jax.__version__} (exported with jax "
        f"{manifest.get('jax_version')}; {type(e).__name__}: {e})") from e
  expected = list(exported.in_avals)[:len(params)]
  shapes_match = len(exported.in_avals) == len(params) + 2 and all(
      tuple(a.shape) == p.shape and a.dtype == p.dtype
      for a, p in zip(expected, params))
  if not shapes_match:
    raise _corrupted(path, "params.npz", "does not match the function's "
                     "parameters (count, shapes or dtypes)")
  landmarker = ExportedLandmarker(manifest, config, exported,
                                  jax.device_put(params))
  landmarker.extras = extras
  landmarker.verified = verified
  return landmarker


# ----------------------------------------------------------------- CLI ----

def _parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m star_jax.export",
      description="Export a trained STAR checkpoint as a self-contained "
                  "jax.export artifact (one zip file).")
  p.add_argument("--checkpoint", required=True,
                 help="training workdir (checkpoints/, checkpoints_best/)")
  p.add_argument("--out", required=True, help="artifact file to write (.zip)")
  p.add_argument("--which", default="best", choices=("best", "latest"))
  p.add_argument("--params", default="auto", choices=("auto", "ema", "raw"),
                 help="auto: EMA parameters when stored, else raw")
  p.add_argument("--with_heatmaps", action="store_true",
                 help="also output the last stack's heatmaps")
  p.add_argument("--platforms", default=",".join(DEFAULT_PLATFORMS),
                 help="comma-separated jax platforms to lower for")
  p.add_argument("--uncertainty", default="auto", choices=("auto", "on", "off"),
                 help="output each landmark's heatmap covariance; auto: on "
                      "for heatmap models")
  p.add_argument("--extra", action="append", default=[],
                 help="NAME=FILE.json stored in the artifact as "
                      "extras/NAME.json (repeatable), e.g. a detector "
                      "calibration from star_jax.calibrate_detector")
  p.add_argument("--flip_test", default="config",
                 choices=("config", "on", "off"),
                 help="horizontal-flip test-time augmentation; config: as "
                      "the checkpoint's eval.flip_test")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = _parse_args(argv)
  use_ema = {"auto": None, "ema": True, "raw": False}[args.params]
  platforms = tuple(x.strip() for x in args.platforms.split(",") if x.strip())
  try:
    extras = read_extras(args.extra)
    manifest = export_checkpoint(args.checkpoint, args.out, args.which,
                                 use_ema=use_ema,
                                 with_heatmaps=args.with_heatmaps,
                                 platforms=platforms,
                                 flip_test={"config": None, "on": True,
                                            "off": False}[args.flip_test],
                                 with_covariance={"auto": None, "on": True,
                                                  "off": False}[
                                                      args.uncertainty],
                                 extras=extras)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  src = manifest["source"]
  print(f"wrote {args.out}: {manifest['num_points']} points, crop "
        f"{manifest['crop_size']} px, platforms {manifest['platforms']}, from "
        f"{src.get('path')} ({'EMA' if src.get('ema') else 'raw'} params), "
        f"{os.path.getsize(args.out) / 2**20:.1f} MiB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
