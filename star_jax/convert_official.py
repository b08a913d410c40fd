r"""Imports the public STAR PyTorch checkpoints into our params and an orbax checkpoint.

Command (torch is needed only here: `pip install torch`, the CPU build is
enough):

  python -m star_jax.convert_official \
      --pkl WFLW_STARLoss_NME_4_02_FR_2_32_AUC_0_605.pkl --out runs/wflw_official

The public checkpoints (ZhenglinZhou/STAR, WFLW 98 points, 300W 68, COFW 29)
are `torch.save` pickles of a dict whose "net" entry holds the state dict of
`StackedHGNetV1` (also "optimizer", "scheduler", "epoch", maybe "net_ema").

SAFETY: a pickle can run arbitrary code when it is loaded. The file is first
loaded with `torch.load(weights_only=True)`, which only rebuilds tensors and
plain containers. If that fails (the file holds other Python objects), the
command stops; `--allow_unsafe_pickle` loads it with the full unpickler, which
is only safe for files from a source you trust.

What the conversion does (the mapping is derived from our own parameter tree,
so every tensor on either side is accounted for, or the command fails with the
list of what is left over):

  * Our module paths map to the official names: `stem/coord_conv` ->
    `pre.0.conv`, `stem/coord_conv_bn` -> `pre.0.bn`, `stem/res{1,2,3}` ->
    `pre.{1,3,4}`, `hourglass_i/...` -> `hgs.i...` (`coord_conv` ->
    `coordconv.conv`), `feature_res_i` -> `features.i.0`, `feature_conv_i` /
    `feature_bn_i` -> `features.i.1.conv` / `.bn`, `{heatmap,pointmap,
    edgemap}_head_i` -> `out_{heatmaps,pointmaps,edgemaps}.i.conv`,
    `merge_X_i` -> `merge_X.i.conv`; inside a ResBlock `convN` -> `convN.conv`,
    `skip` -> `skip_layer.conv`, `bnN` -> `bnN`.
  * Convolution weights: PyTorch OIHW -> HWIO for the 3x3 and 7x7 convs, and
    `[O, I, 1, 1]` -> `[I, O]` for our matmul 1x1 convs (`layers.Conv1x1`).
  * BatchNorm: weight -> scale, bias -> bias, running_mean / running_var ->
    batch_stats mean / var (eps 1e-5 as PyTorch).
  * CoordConv channel order: the public code concatenates [features, rows,
    columns, radius, boundary rows, boundary columns] (its "xx" channel varies
    along the rows), the same order as ours (`layers.coordinate_channels`), so
    the kernels are copied without permutation.
  * Ignored, by design: BatchNorm `num_batches_tracked` counters; the
    `skip_layer` convs of ResBlocks whose input and output widths are equal
    (created by the public code but never used in its forward); the AAM
    buffers `e2h_transform.{weight,bias}`, which are fixed 0/1 matrices: they
    are compared with our landmark scheme's edges and the conversion fails if
    they differ.
  * Input: the public code feeds BGR images normalised as (x - 127.5) / 127.5.
    The converted config sets `model.input_bgr=True`, so our model keeps
    taking RGB uint8 crops and reverses the channels itself; the
    normalisation is the same as ours.

The point count (98 / 68 / 29) selects configs/{wflw,300w,cofw}_star.py; the
number of stacks, hourglass depth and width are read from the state dict.
The output directory gets the training layout (training.checkpoints):
`checkpoints/0/` and `checkpoints_best/0/` with the state (params, BatchNorm
statistics, EMA = the converted params, a fresh Adam state), the config and
provenance in `meta` (file, SHA-256, state key). The best-checkpoint slot
carries the metric value +inf ("not evaluated"): the weights have not been
evaluated here, and a later fine-tuning run replaces it at its first
evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import os
import re
import sys
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from star_jax import aam
from star_jax import model as model_lib
from training import checkpoints as ckpt_lib
from training import state as state_lib

# Point count -> the config module of that dataset (configs/ at the repo root).
CONFIGS = {98: "configs.wflw_star", 68: "configs.300w_star",
           29: "configs.cofw_star"}

# Image side of the public models (their conf/alignment.py width/height).
OFFICIAL_CROP_SIZE = 256

_RESBLOCK_CONVS = {"conv1": "conv1.conv", "conv2": "conv2.conv",
                   "conv3": "conv3.conv", "skip": "skip_layer.conv"}
_STEM = {"coord_conv": "pre.0.conv", "coord_conv_bn": "pre.0.bn",
         "res1": "pre.1", "res2": "pre.3", "res3": "pre.4"}
_PER_STACK = {
    "hourglass": "hgs.{i}", "feature_res": "features.{i}.0",
    "feature_conv": "features.{i}.1.conv", "feature_bn": "features.{i}.1.bn",
    "heatmap_head": "out_heatmaps.{i}.conv",
    "pointmap_head": "out_pointmaps.{i}.conv",
    "edgemap_head": "out_edgemaps.{i}.conv",
    "merge_features": "merge_features.{i}.conv",
    "merge_heatmaps": "merge_heatmaps.{i}.conv",
    "merge_pointmaps": "merge_pointmaps.{i}.conv",
    "merge_edgemaps": "merge_edgemaps.{i}.conv",
}
# (collection, our leaf name) -> official tensor name.
_LEAVES = {("params", "kernel"): "weight", ("params", "bias"): "bias",
           ("params", "scale"): "weight", ("batch_stats", "mean"):
           "running_mean", ("batch_stats", "var"): "running_var"}


@dataclasses.dataclass(frozen=True)
class OfficialArchitecture:
  """The shape of a public StackedHGNetV1, read from its state dict."""
  num_points: int
  num_edges: int
  num_stacks: int
  depth: int
  width: int
  use_aam: bool


# ----------------------------------------------------------- loading ----

def load_official_state_dict(path: str, state_key: str = "net",
                             allow_unsafe_pickle: bool = False
                             ) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
  """Reads a public `.pkl` checkpoint: (state dict as NumPy, other info).

  Args:
    path: the `torch.save` file.
    state_key: which entry holds the state dict ("net"; "net_ema" for the EMA
      weights when the file has them).
    allow_unsafe_pickle: fall back to the full unpickler (can execute code
      from the file) when `weights_only=True` cannot load it.

  Returns:
    (name -> array with "module." prefixes removed, {"epoch": ..., "keys":
    top-level keys of the file}).

  Raises:
    ImportError: torch is not installed.
    FileNotFoundError: no such file.
    ValueError: not loadable safely (and not allowed unsafely), or no
      `state_key` entry.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "converting official checkpoints needs PyTorch to read the .pkl "
        "file: pip install torch (the CPU build is enough); it is used only "
        "by this command.") from e
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"no checkpoint file {path!r}; pass --pkl with one of the public STAR "
        "checkpoints (e.g. WFLW_STARLoss_NME_4_02_FR_2_32_AUC_0_605.pkl).")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    # torch raises pickle.UnpicklingError (or RuntimeError in some versions)
    # when the file holds objects other than tensors and plain containers.
    reason = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    if not allow_unsafe_pickle:
      raise ValueError(
          f"{path} cannot be loaded with torch.load(weights_only=True) (it "
          f"holds Python objects besides tensors: {reason}). Loading it fully "
          "runs the pickle's code: only if you trust where the file comes "
          "from, rerun with --allow_unsafe_pickle.") from e
    warnings.warn(
        f"loading {path} with the full unpickler (weights_only=False): a "
        "pickle can execute arbitrary code; do this only for files from a "
        "source you trust.", stacklevel=2)
    obj = torch.load(path, map_location="cpu", weights_only=False)

  if isinstance(obj, Mapping) and state_key in obj:
    state = obj[state_key]
  elif (isinstance(obj, Mapping) and obj and
        all(hasattr(v, "shape") for v in obj.values())):
    state = obj  # A bare state dict.
  else:
    keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"{path} has no {state_key!r} entry (top level: {keys}); the public "
        "STAR checkpoints store the network's state dict under 'net' "
        "(--state_key net_ema for the EMA weights when present).")
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}[{state_key!r}] is a {type(state).__name__}, "
                     "not a state dict.")
  arrays = {}
  for name, value in state.items():
    if not hasattr(value, "detach"):
      raise ValueError(f"{path}[{state_key!r}][{name!r}] is not a tensor "
                       f"({type(value).__name__}).")
    arrays[name] = value.detach().cpu().numpy()
  info = {"keys": sorted(obj) if isinstance(obj, Mapping) else [],
          "epoch": obj.get("epoch") if isinstance(obj, Mapping) else None}
  return strip_module_prefix(arrays), info


def strip_module_prefix(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """Removes the "module." prefix (DataParallel / DistributedDataParallel)."""
  out = {}
  for name, value in state_dict.items():
    new = name[len("module."):] if name.startswith("module.") else name
    if new in out:
      raise ValueError(f"state dict has both {new!r} and 'module.{new}'.")
    out[new] = value
  return out


# ------------------------------------------------------- architecture ----

def infer_architecture(state_dict: Mapping[str, np.ndarray]
                       ) -> OfficialArchitecture:
  """Reads stacks, depth, width, point and edge counts from the state dict.

  Raises:
    ValueError: not a StackedHGNetV1 state dict, or a variant our model does
      not have (without CoordConv).
  """
  required = ("pre.0.conv.weight", "out_heatmaps.0.conv.weight",
              "hgs.0.up1.conv3.conv.weight")
  missing = [k for k in required if k not in state_dict]
  if missing:
    raise ValueError(
        f"not a STAR StackedHGNetV1 state dict: missing {missing}; its first "
        f"keys are {sorted(state_dict)[:8]}.")
  stem = np.shape(state_dict["pre.0.conv.weight"])
  if len(stem) != 4 or stem[1] != 6:
    raise ValueError(
        f"pre.0.conv.weight has shape {stem}; expected [64, 6, 7, 7] (3 image "
        "+ 3 CoordConv channels). Checkpoints trained with add_coord=False "
        "are not supported (our model always uses CoordConv).")
  stacks = sorted({int(m.group(1)) for k in state_dict
                   if (m := re.match(r"hgs\.(\d+)\.", k))})
  if stacks != list(range(len(stacks))):
    raise ValueError(f"hourglass indices {stacks} are not 0..n-1.")
  depth, prefix = 1, "hgs.0."
  while f"{prefix}low2.up1.bn1.weight" in state_dict:
    depth += 1
    prefix += "low2."
  use_aam = "out_pointmaps.0.conv.weight" in state_dict
  num_edges = (int(np.shape(state_dict["out_edgemaps.0.conv.weight"])[0])
               if use_aam else 0)
  return OfficialArchitecture(
      num_points=int(np.shape(state_dict["out_heatmaps.0.conv.weight"])[0]),
      num_edges=num_edges, num_stacks=len(stacks), depth=depth,
      width=int(np.shape(state_dict["hgs.0.up1.conv3.conv.weight"])[0]),
      use_aam=use_aam)


def official_model(arch: OfficialArchitecture, **kwargs
                   ) -> model_lib.StackedHourglass:
  """Our StackedHourglass for `arch`, reading BGR like the public code."""
  return model_lib.from_scheme(
      arch.num_points, num_stacks=arch.num_stacks, depth=arch.depth,
      width=arch.width, use_aam=arch.use_aam, input_bgr=True, **kwargs)


# ------------------------------------------------------------ mapping ----

def official_name(collection: str, path: Tuple[str, ...]) -> str:
  """The official state-dict key of our variable `collection/path`.

  Args:
    collection: "params" or "batch_stats".
    path: module names and the leaf name, e.g. ("stem", "res1", "conv2",
      "kernel").

  Raises:
    ValueError: a name this module does not know (a model change that the
      converter has not been taught).
  """
  *modules, leaf = path
  if (collection, leaf) not in _LEAVES:
    raise ValueError(f"no official counterpart for {collection}/"
                     f"{'/'.join(path)}")
  head, rest = modules[0], modules[1:]
  if head == "stem":
    if not rest or rest[0] not in _STEM:
      raise ValueError(f"unknown stem module {'/'.join(path)}")
    parts = [_STEM[rest[0]]]
    rest = rest[1:]
  else:
    m = re.fullmatch(r"([a-z_]+)_(\d+)", head)
    if not m or m.group(1) not in _PER_STACK:
      raise ValueError(f"unknown module {head!r} in {'/'.join(path)}")
    parts = [_PER_STACK[m.group(1)].format(i=int(m.group(2)))]
  for name in rest:
    if name == "coord_conv":
      parts.append("coordconv.conv")
    else:
      parts.append(_RESBLOCK_CONVS.get(name, name))
  parts.append(_LEAVES[(collection, leaf)])
  return ".".join(parts)


def _to_our_layout(leaf: str, value: np.ndarray, our_shape) -> np.ndarray:
  """PyTorch layout -> ours (kernels transposed; other tensors as they are)."""
  value = np.asarray(value)
  if leaf != "kernel":
    return value
  if value.ndim != 4:
    return value  # Wrong rank: reported as a shape mismatch by the caller.
  if len(our_shape) == 4:  # nn.Conv: OIHW -> HWIO.
    return np.transpose(value, (2, 3, 1, 0))
  if value.shape[2:] != (1, 1):
    return value
  return value[:, :, 0, 0].T  # Conv1x1: [O, I, 1, 1] -> [I, O].


def _flatten(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _unflatten(flat):
  tree: Dict[str, Any] = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def _check_aam_buffers(state_dict, arch: OfficialArchitecture,
                       model: model_lib.StackedHourglass) -> List[str]:
  """Compares the public E2H buffers with our scheme's edges; problems."""
  problems = []
  if not arch.use_aam:
    return problems
  ours = aam.edge_to_point_matrix(model.edges, model.num_points)  # [E, N]
  weight = state_dict.get("e2h_transform.weight")
  bias = state_dict.get("e2h_transform.bias")
  if weight is None or bias is None:
    return ["e2h_transform.weight / .bias missing (AAM checkpoints have them)"]
  weight = np.asarray(weight, np.float32)
  if weight.shape != (ours.shape[1], ours.shape[0], 1, 1):
    return [f"e2h_transform.weight has shape {weight.shape}; our "
            f"{model.num_points}-point scheme has {ours.shape[0]} edges "
            f"-> expected {(ours.shape[1], ours.shape[0], 1, 1)}"]
  theirs = weight[:, :, 0, 0].T
  if not np.array_equal(theirs, ours):
    bad = np.argwhere(theirs != ours)[:10].tolist()
    problems.append(
        "e2h_transform.weight (the AAM edge-to-point matrix) differs from "
        f"data.schemes' {model.num_points}-point edges at (edge, point) "
        f"{bad}; the checkpoint uses another edge definition.")
  if not np.array_equal(np.asarray(bias, np.float32),
                        aam.points_on_no_edge(ours)):
    problems.append("e2h_transform.bias (points on no edge) differs from "
                    "our scheme's.")
  return problems


def convert_state_dict(state_dict: Mapping[str, np.ndarray],
                       num_points: Optional[int] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Maps a public StackedHGNetV1 state dict to our Flax variables.

  Args:
    state_dict: official name -> array (torch tensors converted with
      `.numpy()`; a "module." prefix is removed).
    num_points: expected landmark count (98 / 68 / 29), or None to take it
      from the state dict.

  Returns:
    {"params": ..., "batch_stats": ...}: nested dicts of float32 NumPy arrays
    for `official_model(infer_architecture(state_dict))`.

  Raises:
    ValueError: listing every official key left unmapped (other than the
      documented unused ones), every variable of ours left unfilled, every
      shape mismatch (both names and shapes), and AAM edges that differ from
      our scheme.
  """
  state_dict = strip_module_prefix(state_dict)
  arch = infer_architecture(state_dict)
  if num_points is not None and int(num_points) != arch.num_points:
    raise ValueError(f"the checkpoint has {arch.num_points} landmarks "
                     f"(out_heatmaps.0.conv.weight), expected {num_points}.")
  model = official_model(arch)
  size = 4 * 2**arch.depth  # The smallest input; shapes do not depend on it.
  abstract = jax.eval_shape(
      lambda im: model.init(jax.random.PRNGKey(0), im, train=False),
      jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8))

  used, filled, unfilled, mismatched = set(), {}, [], []
  for collection in ("params", "batch_stats"):
    for path, spec in _flatten(dict(abstract[collection])).items():
      key = official_name(collection, path)
      if key not in state_dict:
        unfilled.append(f"{collection}/{'/'.join(path)} <- {key}")
        continue
      used.add(key)
      value = _to_our_layout(path[-1], state_dict[key], spec.shape)
      if tuple(value.shape) != tuple(spec.shape):
        mismatched.append(
            f"{key} {tuple(np.shape(state_dict[key]))} -> "
            f"{collection}/{'/'.join(path)} expects {tuple(spec.shape)}")
        continue
      filled[(collection,) + path] = np.asarray(value, np.float32)

  # Official keys that are unused by design.
  mapped_blocks = {k[:-len(".bn1.weight")] for k in used
                   if k.endswith(".bn1.weight")}
  unmapped = []
  for key in sorted(set(state_dict) - used):
    if key.endswith(".num_batches_tracked"):
      continue
    if key.startswith("e2h_transform."):
      continue  # Checked below.
    m = re.fullmatch(r"(.*)\.skip_layer\.conv\.(weight|bias)", key)
    if m and m.group(1) in mapped_blocks:
      ours_has_skip = f"{m.group(1)}.skip_layer.conv.{m.group(2)}" in used
      shape = np.shape(state_dict.get(f"{m.group(1)}.skip_layer.conv.weight"))
      if not ours_has_skip and len(shape) == 4 and shape[0] == shape[1]:
        continue  # Identity ResBlock: the public forward skips this conv.
    unmapped.append(f"{key} {tuple(np.shape(state_dict[key]))}")

  problems = []
  if unmapped:
    problems.append(f"{len(unmapped)} official tensors have no place in our "
                    "model:\n    " + "\n    ".join(unmapped[:30]))
  if unfilled:
    problems.append(f"{len(unfilled)} of our variables have no official "
                    "tensor:\n    " + "\n    ".join(unfilled[:30]))
  if mismatched:
    problems.append(f"{len(mismatched)} shape mismatches (official PyTorch "
                    "shape -> our variable):\n    " +
                    "\n    ".join(mismatched[:30]))
  problems += _check_aam_buffers(state_dict, arch, model)
  if problems:
    raise ValueError(
        f"cannot convert this state dict to our model ({arch}):\n  " +
        "\n  ".join(problems))
  tree = _unflatten(filled)
  return {"params": tree["params"], "batch_stats": tree["batch_stats"]}


# ------------------------------------------------------- checkpoint ----

def official_config(arch: OfficialArchitecture,
                    crop_size: int = OFFICIAL_CROP_SIZE):
  """The dataset's STAR config with the checkpoint's shape and BGR input."""
  if arch.num_points not in CONFIGS:
    raise ValueError(
        f"no config for {arch.num_points}-point checkpoints; the public ones "
        f"have {sorted(CONFIGS)} points (WFLW, 300W, COFW).")
  config = importlib.import_module(CONFIGS[arch.num_points]).get_config()
  config.model.num_stacks = arch.num_stacks
  config.model.depth = arch.depth
  config.model.width = arch.width
  config.model.use_aam = arch.use_aam
  config.model.input_bgr = True
  config.data.crop_size = int(crop_size)
  return config


def _check_new_dir(out_dir: str) -> None:
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or
                                  os.listdir(out_dir)):
    raise ValueError(f"--out {out_dir} exists and is not an empty directory; "
                     "choose a new one (nothing is overwritten).")


def save_checkpoint(variables: Mapping[str, Any], config, out_dir: str,
                    meta: Mapping[str, Any]) -> None:
  """Writes `variables` as step 0 of a training workdir (periodic + best).

  The state has the structure `training.loop.Trainer` restores: params,
  model_state {"batch_stats"}, a fresh optimizer state, EMA = (params,
  model_state) when config.ema.enabled, the seed's train rng.
  """
  _check_new_dir(out_dir)
  tx, _ = state_lib.make_optimizer(config.optimizer, 1, 1)
  use_ema = state_lib.ema_decay(config.get("ema", None),
                                int(config.batch_size)) is not None

  @jax.jit  # One compilation instead of an eager op per optimizer leaf.
  def make_state(params, batch_stats, seed):
    # As Trainer._init_fn: the train rng is the second half of split(seed).
    _, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    return state_lib.create_train_state(
        params, {"batch_stats": batch_stats}, tx, None, train_rng, use_ema)

  state = make_state(dict(variables["params"]),
                     dict(variables["batch_stats"]), int(config.seed))
  config_dict = ckpt_lib.config_to_dict(config)
  best_metric = config.get("best_metric", None)
  # Asynchronous: the two saves overlap; wait() blocks until both are on disk.
  checkpointer = ckpt_lib.Checkpointer(out_dir, keep=1,
                                       best_metric=best_metric,
                                       async_save=True)
  try:
    checkpointer.save(0, state, None, meta, config_dict, force=True)
    if best_metric:
      checkpointer.save_best(0, state, None, meta, config_dict,
                             {best_metric: float("inf")})
    checkpointer.wait()
  finally:
    checkpointer.close()
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config_dict, f, indent=2, sort_keys=True)


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def convert_file(pkl: str, out_dir: str, state_key: str = "net",
                 allow_unsafe_pickle: bool = False,
                 crop_size: int = OFFICIAL_CROP_SIZE):
  """Loads, converts and saves one public checkpoint -> (config, arch)."""
  _check_new_dir(out_dir)  # Before the (slow) loading.
  state_dict, info = load_official_state_dict(pkl, state_key,
                                              allow_unsafe_pickle)
  arch = infer_architecture(state_dict)
  config = official_config(arch, crop_size)  # Fails early on odd counts.
  variables = convert_state_dict(state_dict)
  epoch = info.get("epoch")
  meta = {"converted_from": os.path.abspath(pkl), "sha256": _sha256(pkl),
          "state_key": state_key,
          "official_epoch": epoch if isinstance(epoch, (int, float)) else None,
          "architecture": dataclasses.asdict(arch),
          "best_metric_value": "not evaluated (stored as +inf)"}
  save_checkpoint(variables, config, out_dir, meta)
  return config, arch


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m star_jax.convert_official",
      description="Convert a public STAR PyTorch checkpoint (.pkl) to our "
      "params and an orbax checkpoint directory. WARNING: .pkl files are "
      "pickles; loading an untrusted pickle can run arbitrary code.")
  parser.add_argument("--pkl", required=True, help="the torch.save file")
  parser.add_argument("--out", required=True,
                      help="new directory for the orbax checkpoint")
  parser.add_argument("--state_key", default="net",
                      help="entry holding the state dict (net | net_ema)")
  parser.add_argument("--crop_size", type=int, default=OFFICIAL_CROP_SIZE,
                      help="input side the model was trained at (256)")
  parser.add_argument("--allow_unsafe_pickle", action="store_true",
                      help="if weights_only loading fails, unpickle fully "
                      "(runs code from the file: trusted files only)")
  args = parser.parse_args(argv)
  config, arch = convert_file(args.pkl, args.out, args.state_key,
                              args.allow_unsafe_pickle, args.crop_size)
  config_file = CONFIGS[arch.num_points].replace(".", "/") + ".py"
  print(f"converted {args.pkl} ({arch.num_points} points, {arch.num_stacks} "
        f"stacks, depth {arch.depth}, width {arch.width}, AAM "
        f"{arch.use_aam}) -> {os.path.abspath(args.out)}")
  overrides = " ".join(
      f"--config.model.{k}={v}" for k, v in (
          ("num_stacks", arch.num_stacks), ("depth", arch.depth),
          ("width", arch.width), ("use_aam", arch.use_aam),
          ("input_bgr", True)))
  print("evaluate with:\n  python run.py --config=" + config_file +
        f" --workdir={args.out} --mode=eval --config.data.root=DATA "
        f"{overrides} --config.data.crop_size={config.data.crop_size}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
