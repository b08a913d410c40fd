"""STAR's data: lists the records of config.data and serves grain loaders."""

from __future__ import annotations

import os
from typing import Dict

import numpy as np

from data import schemes as schemes_lib
from training import errors


class StarData:
  """Lists the records of config.data and serves grain loaders (data.pipeline).

  The eval splits are listed at construction, the training split on first
  use (`train_records`): the training loop asks for `num_train_examples()`
  before it compiles anything, so a missing dataset raises FileNotFoundError /
  ValueError with the expected layout first, and --mode=eval lists only the
  splits it evaluates.
  """

  def __init__(self, config, scheme: schemes_lib.LandmarkScheme):
    self.config = config
    self.d = config.data
    self.scheme = scheme
    self._train_records = None
    self.eval_records = {s: self._list(s, is_train=False)
                         for s in self.d.eval_splits}

  @property
  def train_records(self):
    if self._train_records is None:
      self._train_records = self._list(self.d.train_split, is_train=True)
    return self._train_records

  def _list(self, split: str, is_train: bool):
    d = self.d
    if d.name == "synthetic":
      from data import synthetic  # pylint: disable=g-import-not-at-top
      syn = d.synthetic
      n = int(syn.num_train if is_train else syn.num_eval)
      if n <= 0:
        raise errors.UserError(
            f"config.data.synthetic.num_{'train' if is_train else 'eval'} "
            f"must be > 0, got {n}")
      records = synthetic.make_records(
          n, seed=int(syn.seed if is_train else syn.eval_seed),
          image_size=int(syn.image_size),
          # Annotation noise is a property of the training labels; the
          # evaluation faces keep their exact points.
          contour_noise=float(syn.contour_noise) if is_train else 0.0,
          point_noise=float(syn.point_noise) if is_train else 0.0)
    else:
      from data import readers  # pylint: disable=g-import-not-at-top
      root = data_root(self.config)
      if not root:
        raise errors.UserError(
            f"config.data.root is empty: pass --config.data.root=/path/to/"
            f"{d.name}. Expected layout:\n{_reader_layout(d.name)}")
      listing = readers.read_dataset(d.name, root, split,
                                     check_images=d.get("check_images", "exists"))
      if listing.problems:
        print(listing.summary(), flush=True)
      records = list(listing)
      if not records:
        raise errors.UserError(
            f"{d.name} split {split!r} under {root} has no usable faces "
            f"(problems: {len(listing.problems)}). Expected layout:\n"
            f"{_reader_layout(d.name)}")
    n_points = records[0].num_points
    if n_points != self.scheme.num_points:
      raise errors.UserError(
          f"{d.name} {split} has {n_points} points per face but "
          f"config.data.scheme={d.scheme!r} has {self.scheme.num_points}")
    return records

  def num_train_examples(self) -> int:
    return len(self.train_records)

  def _loader_options(self):
    d = self.d
    return dict(scheme=self.scheme, crop_size=int(d.crop_size),
                crop_mode=d.crop_mode,
                points_margin=float(d.get("points_margin", 1.25)),
                num_workers=int(d.num_workers),
                worker_buffer_size=int(d.get("prefetch_buffer_size", 2)))

  def train_iterator(self, local_batch_size: int):
    """Infinite shuffled, augmented batches; grain get_state/set_state."""
    from data import pipeline  # pylint: disable=g-import-not-at-top
    loader = pipeline.make_landmark_loader(
        self.train_records, train=True, batch_size=local_batch_size,
        seed=int(self.config.seed), augment_config=dict(self.d.augment),
        **self._loader_options())
    return iter(loader)

  def eval_iterators(self, local_batch_size: int):
    """split -> factory of one ordered, padded pass (`valid` marks padding)."""
    from data import pipeline  # pylint: disable=g-import-not-at-top

    def factory(records):
      return lambda: iter(pipeline.make_eval_loader(
          records, batch_size=local_batch_size, **self._loader_options()))
    return {split: factory(r) for split, r in self.eval_records.items()}

  def eval_groups(self, split: str, indices: np.ndarray
                  ) -> Dict[str, np.ndarray]:
    """Named boolean masks over the evaluated faces (in `indices` order).

    0/1 record attributes (WFLW pose, expression, ...) when
    data.attribute_groups, and data.subset_groups (name -> record subsets,
    e.g. 300W common = helen_testset + lfpw_testset).
    """
    records = [self.eval_records[split][int(i)] for i in indices]
    groups: Dict[str, np.ndarray] = {}
    if self.d.get("attribute_groups", True) and records:
      for key in records[0].attributes:
        values = np.array([r.attributes.get(key, -1) for r in records])
        if values.dtype.kind in "biu" and set(np.unique(values)) <= {0, 1}:
          groups[key] = values.astype(bool)
    subset_groups = self.d.get("subset_groups", None) or {}
    for name, subsets in dict(subset_groups).items():
      subsets = (subsets,) if isinstance(subsets, str) else tuple(subsets)
      groups[name] = np.array([r.subset in subsets for r in records], bool)
    return groups


def _reader_layout(name: str) -> str:
  import importlib  # pylint: disable=g-import-not-at-top
  from data import readers  # pylint: disable=g-import-not-at-top
  try:
    module_name = readers._READERS[name][0]  # pylint: disable=protected-access
    return getattr(importlib.import_module(f"data.readers.{module_name}"),
                   "LAYOUT", "(see data/readers)")
  except (KeyError, ImportError):
    return f"(see data/readers; known datasets: {readers.NAMES})"


def data_root(config) -> str:
  root = config.data.get("root", "")
  return os.path.expanduser(root) if root else ""
