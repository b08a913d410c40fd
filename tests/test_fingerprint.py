"""Tests of training/fingerprint.py (and data.records.training_listing).

The fingerprint detects a changed label, an added / removed file and a
reordering; it ignores where the dataset folder lives and, for
self-supervised listings, the labels. A resume on changed data is refused
with the difference by file, unless `resume_may_change` allows it.
"""

import numpy as np
import pytest

from data import records as records_lib
from tests import test_loop as toy
from training import fingerprint
from training import loop


def _records(root, n=5, shift=None):
  out = []
  for i in range(n):
    points = np.full((3, 2), float(i), np.float32)
    if shift is not None and i == shift:
      points = points + np.float32(0.5)
    out.append(records_lib.FaceRecord(image_path=f"{root}/img_{i}.jpg",
                                      landmarks=points))
  return out


def test_listing_detects_labels_files_and_order_not_the_folder():
  base = fingerprint.fingerprint(records_lib.training_listing(_records("/a/set")))
  moved = fingerprint.fingerprint(
      records_lib.training_listing(_records("/mnt/copy/set")))
  assert moved == base                      # the same faces elsewhere.
  relabelled = records_lib.training_listing(_records("/a/set", shift=2))
  assert fingerprint.fingerprint(relabelled) != base
  fewer = records_lib.training_listing(_records("/a/set", n=4))
  assert fingerprint.fingerprint(fewer)["count"] == 4
  order = records_lib.training_listing(_records("/a/set")[::-1])
  assert fingerprint.fingerprint(order) != base
  # Self-supervised listings carry no labels: a relabelled face is the same.
  a = records_lib.training_listing(_records("/a/set"), with_labels=False)
  b = records_lib.training_listing(_records("/a/set", shift=2),
                                   with_labels=False)
  assert a == b and all(label == "" for _, label in a)


def test_listing_keys_are_unique_for_several_faces_per_image():
  r = _records("/a")[:1] * 3
  keys = [k for k, _ in records_lib.training_listing(r)]
  assert keys == ["img_0.jpg", "img_0.jpg@1", "img_0.jpg@2"]


def test_difference_names_the_files():
  old = records_lib.training_listing(_records("/a", n=5))
  new = records_lib.training_listing(_records("/a", n=6, shift=1))[1:]
  text = fingerprint.describe_difference(old, new, fingerprint.fingerprint(old))
  assert "1 added: img_5.jpg" in text
  assert "1 removed: img_0.jpg" in text
  assert "1 relabelled: img_1.jpg" in text
  same = fingerprint.describe_difference(old, old[::-1],
                                         fingerprint.fingerprint(old))
  assert "in another order" in same


class ListedToy(toy.ToyMethod):
  """The toy method with a training listing; `config.relabel` changes the
  label of one face."""

  def train_listing(self):
    return records_lib.training_listing(
        _records("/data/toy", n=8, shift=self.config.relabel))


def test_resume_on_changed_labels_is_refused_then_allowed(tmp_path, capsys):
  first = toy.toy_config(max_steps=4, relabel=-1, eval_every_epochs=0,
                         best_metric="", resume_may_change=("relabel",))
  loop.train(ListedToy(first), first, str(tmp_path))
  assert (tmp_path / fingerprint.LISTING_FILE).exists()
  changed = toy.toy_config(max_steps=8, relabel=3, eval_every_epochs=0,
                           best_metric="", resume_may_change=("relabel",))
  with pytest.raises(fingerprint.DataChangedError,
                     match="1 relabelled: img_3.jpg"):
    loop.train(ListedToy(changed), changed, str(tmp_path))
  # Unchanged data resumes silently.
  same = toy.toy_config(max_steps=6, relabel=-1, eval_every_epochs=0,
                        best_metric="", resume_may_change=("relabel",))
  assert int(loop.train(ListedToy(same), same, str(tmp_path)).step) == 6
  allowed = toy.toy_config(max_steps=8, relabel=3, eval_every_epochs=0,
                           best_metric="",
                           resume_may_change=("relabel", "data_listing"))
  capsys.readouterr()
  state = loop.train(ListedToy(allowed), allowed, str(tmp_path))
  assert int(state.step) == 8
  assert "warning: resuming on changed training data" in capsys.readouterr().out
  # The new listing is the one recorded now: a further resume on it is quiet.
  longer = toy.toy_config(max_steps=10, relabel=3, eval_every_epochs=0,
                          best_metric="", resume_may_change=("relabel",))
  assert int(loop.train(ListedToy(longer), longer, str(tmp_path)).step) == 10
