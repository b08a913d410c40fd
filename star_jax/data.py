"""STAR's data: lists the records of config.data and serves grain loaders."""

from __future__ import annotations

from typing import Dict

import numpy as np

from data import ambiguity
from data import pipeline
from data import readers
from data import records as records_lib
from data import schemes as schemes_lib


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
      records = self._list(self.d.train_split, is_train=True)
      # Controlled label noise (data/ambiguity.py) is a property of the
      # training labels only; sigma 0 (or no field) returns `records`.
      noise = ambiguity.LabelNoise.from_config(self.d.get("label_noise", None))
      self._train_records = ambiguity.apply_to_records(records, noise)
    return self._train_records

  def _list(self, split: str, is_train: bool):
    d = self.d
    options = {}
    if d.name == "synthetic":
      syn = d.synthetic
      options = dict(
          num_faces=int(syn.num_train if is_train else syn.num_eval),
          seed=int(syn.seed if is_train else syn.eval_seed),
          image_size=int(syn.image_size),
          # Annotation noise is a property of the training labels; the
          # evaluation faces keep their exact points.
          contour_noise=float(syn.contour_noise) if is_train else 0.0,
          point_noise=float(syn.point_noise) if is_train else 0.0)
    else:
      options["check_images"] = d.get("check_images", "exists")
    return readers.list_faces(d.name, d.get("root", ""), split,
                              num_points=self.scheme.num_points, **options)

  def num_train_examples(self) -> int:
    return len(self.train_records)

  def train_listing(self):
    """Files and labels trained on, for the checkpoint's fingerprint."""
    return records_lib.training_listing(self.train_records)

  def _loader_options(self):
    d = self.d
    return dict(scheme=self.scheme, crop_size=int(d.crop_size),
                crop_mode=d.crop_mode,
                points_margin=float(d.get("points_margin", 1.25)),
                antialias=bool(d.get("antialias", False)),
                num_workers=int(d.num_workers),
                worker_buffer_size=int(d.get("prefetch_buffer_size", 2)))

  def train_iterator(self, local_batch_size: int):
    """Infinite shuffled, augmented batches; grain get_state/set_state."""
    loader = pipeline.make_landmark_loader(
        self.train_records, train=True, batch_size=local_batch_size,
        seed=int(self.config.seed), augment_config=dict(self.d.augment),
        # "device": pre-crops, augmented in the train step (StarMethod);
        # with data.precrop_cache_dir set they are built once into
        # array_record files there (data/precrop_cache.py).
        augment_on=self.d.get("augment_on", "host"),
        precrop_margin=float(self.d.get("precrop_margin", 2.0)),
        precrop_cache_dir=self.d.get("precrop_cache_dir", "") or None,
        **self._loader_options())
    return iter(loader)

  def eval_iterators(self, local_batch_size: int):
    """split -> factory of one ordered, padded pass (`valid` marks padding)."""

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
