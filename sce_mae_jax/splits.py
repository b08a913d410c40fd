"""Fixed, label-free splits of file-ordered face sets (the shared MTFL copy).

The split only permutes line numbers: it never reads a coordinate, so the
same split can be used by the self-supervised stages (which must not see
labels) and by the protocols that score against the labels.
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from training import errors


def fixed_split(num_records: int, num_val: int, seed: int = 0
                ) -> Dict[str, np.ndarray]:
  """The documented fixed split of a file-ordered set: `{"train", "val"}`.

  `perm = default_rng(seed).permutation(num_records)`; val = `perm[:num_val]`,
  train = `perm[num_val:]`, both sorted (file order).
  """
  if not 0 < num_val < num_records:
    raise errors.UserError(
        f"num_val must be in (0, {num_records}), got {num_val}.")
  perm = np.random.default_rng(seed).permutation(num_records)
  return {"val": np.sort(perm[:num_val]), "train": np.sort(perm[num_val:])}


def mtfl_listed_paths(root: str, list_file: str = "training.txt") -> List[str]:
  """Image paths (absolute, file order) of an MTFL-layout list file.

  Reads only the first field of each non-empty line: no coordinates, so
  label-free code (MAE pretraining) can use it to exclude the val faces.
  """
  path = os.path.join(root, list_file)
  if not os.path.isfile(path):
    raise errors.MissingInputError(
        f"{path} not found: expected an MTFL-layout folder with {list_file} "
        "(`path x1..x5 y1..y5` per line, see data/readers/mtfl.py)")
  out = []
  with open(path) as f:
    for line in f:
      fields = line.split()
      if fields:
        out.append(os.path.normpath(
            os.path.join(root, fields[0].replace("\\", "/"))))
  return out


def mtfl_split_paths(root: str, split: str, num_val: int = 1000,
                     seed: int = 0) -> List[str]:
  """Paths of `split` ("train" / "val") of `fixed_split` over training.txt."""
  paths = mtfl_listed_paths(root)
  idx = fixed_split(len(paths), num_val, seed)[split]
  return [paths[i] for i in idx]
