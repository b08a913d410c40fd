"""Tests for data/readers/cofw.py on generated MATLAB-v7.3-style HDF5 files."""

import multiprocessing
import os
import pickle

import h5py
import numpy as np
import pytest

from data import readers
from data.readers import cofw
from tests.test_readers_common import upright


def make_cofw(root, num_train=3, num_test=2, seed=0):
  """Writes COFW_{train,test}_color.mat as MATLAB v7.3 stores them.

  MATLAB is column-major, so h5py sees reversed axes: phis (87, N), bboxes
  (4, N), images (1, N) of references to (3, W, H) or (W, H) uint8 arrays.
  Returns the ground truth per split: images [H, W(, 3)], x, y, occ, bbox.
  """
  rng = np.random.default_rng(seed)
  truth = {}
  for split, n, keys in (("train", num_train, ("IsTr", "phisTr", "bboxesTr")),
                         ("test", num_test, ("IsT", "phisT", "bboxesT"))):
    path = os.path.join(root, cofw.FILES[split])
    faces = []
    with h5py.File(path, "w") as f:
      refs_group = f.create_group("#refs#")
      refs = np.empty((1, n), dtype=h5py.ref_dtype)
      phis = np.zeros((87, n))
      boxes = np.zeros((4, n))
      for i in range(n):
        h, w = rng.integers(10, 30, size=2)
        grey = i == 1
        image = rng.integers(0, 255, (h, w) if grey else (h, w, 3),
                             dtype=np.uint8)
        dataset = refs_group.create_dataset(f"img{i}", data=image.T)
        refs[0, i] = dataset.ref
        x = rng.uniform(0, w - 1, 29)
        y = rng.uniform(0, h - 1, 29)
        x, y = upright(np.stack([x, y], axis=-1)).T
        occ = rng.integers(0, 2, 29).astype(float)
        phis[:, i] = np.concatenate([x, y, occ])
        boxes[:, i] = [1.5, 2.0, w - 3.0, h - 4.0]
        faces.append(dict(image=image, x=x, y=y, occ=occ, bbox=boxes[:, i]))
      f.create_dataset(keys[0], data=refs)
      f.create_dataset(keys[1], data=phis)
      f.create_dataset(keys[2], data=boxes)
    truth[split] = faces
  return truth


def test_values_images_and_occlusion(tmp_path):
  truth = make_cofw(str(tmp_path))
  for split in ("train", "test"):
    listing = readers.read_dataset("cofw", str(tmp_path), split)
    assert len(listing) == len(truth[split]) and not listing.problems
    for record, face in zip(listing, truth[split]):
      np.testing.assert_allclose(record.landmarks[:, 0], face["x"], rtol=1e-6)
      np.testing.assert_allclose(record.landmarks[:, 1], face["y"], rtol=1e-6)
      np.testing.assert_array_equal(record.visible, face["occ"] == 0)
      x, y, w, h = face["bbox"]
      np.testing.assert_allclose(record.box, [x, y, x + w, y + h], rtol=1e-6)
      image = record.load_image()
      expected = face["image"]
      if expected.ndim == 2:
        expected = np.repeat(expected[..., None], 3, axis=-1)
      np.testing.assert_array_equal(image, expected)


def test_values_as_written_by_default_and_one_based_option(tmp_path):
  """Public loaders (HRNet, PIPNet) use phis as written: so does the default;
  one_based=True subtracts 1 from the points and the box corner only."""
  truth = make_cofw(str(tmp_path))
  raw = readers.read_dataset("cofw", str(tmp_path), "test")
  shifted = readers.read_dataset("cofw", str(tmp_path), "test",
                                 one_based=True)
  for r, s, face in zip(raw, shifted, truth["test"]):
    written = np.stack([face["x"], face["y"]], axis=-1)
    np.testing.assert_allclose(r.landmarks, written, rtol=1e-6)
    np.testing.assert_allclose(s.landmarks, written - 1, rtol=1e-6, atol=1e-5)
    x, y, w, h = face["bbox"]
    np.testing.assert_allclose(s.box, [x - 1, y - 1, x + w - 1, y + h - 1],
                               rtol=1e-6)
    np.testing.assert_array_equal(s.visible, r.visible)
  with pytest.raises(ValueError, match="check_images"):
    readers.read_dataset("cofw", str(tmp_path), "test", check_images="maybe")


def _load_in_child(record):
  return record.load_image()


def test_records_pickle_and_decode_in_another_process(tmp_path):
  make_cofw(str(tmp_path))
  listing = readers.read_dataset("cofw", str(tmp_path), "train")
  blob = pickle.dumps(listing.records)
  restored = pickle.loads(blob)
  assert restored[2].image_loader == listing[2].image_loader
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(1) as pool:
    images = pool.map(_load_in_child, restored)
  for image, record in zip(images, listing):
    np.testing.assert_array_equal(image, record.load_image())


def test_missing_file_and_wrong_layout(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    readers.read_dataset("cofw", str(tmp_path), "train")
  assert "COFW_train_color.mat" in str(e.value)
  assert "caltech.edu" in str(e.value)
  with h5py.File(tmp_path / "COFW_train_color.mat", "w") as f:
    f.create_dataset("phisTr", data=np.zeros((58, 2)))
  with pytest.raises(ValueError, match="lacks"):
    readers.read_dataset("cofw", str(tmp_path), "train")
  (tmp_path / "COFW_test_color.mat").write_bytes(b"MATLAB 5.0 MAT-file junk")
  with pytest.raises(ValueError, match="HDF5"):
    readers.read_dataset("cofw", str(tmp_path), "test")


def test_wrong_point_count_raises(tmp_path):
  with h5py.File(tmp_path / "COFW_train_color.mat", "w") as f:
    refs = f.create_group("#refs#")
    ref = refs.create_dataset("a", data=np.zeros((3, 4, 4), np.uint8)).ref
    f.create_dataset("IsTr", data=np.array([[ref]], dtype=h5py.ref_dtype))
    f.create_dataset("phisTr", data=np.zeros((68 * 3, 1)))
    f.create_dataset("bboxesTr", data=np.zeros((4, 1)))
  with pytest.raises(ValueError, match="expected \\(87, N\\)"):
    readers.read_dataset("cofw", str(tmp_path), "train")


def test_label_sanity_uses_the_image_sizes_in_the_mat(tmp_path):
  make_cofw(str(tmp_path))
  path = str(tmp_path / cofw.FILES["train"])
  with h5py.File(path, "r+") as f:
    f["phisTr"][0, 2] = 1000.0  # face 2's first x, far right of its image
  listing = readers.read_dataset("cofw", str(tmp_path), "train")
  assert [r.image_key for r in listing] == [0, 1]
  assert len(listing.problems) == 1
  assert f"{path}[2]" in listing.problems[0].message
  assert "outside the" in listing.problems[0].message
  with h5py.File(path, "r") as f:
    refs = f["IsTr"][()].reshape(-1)
    for record in listing:
      height, width = record.load_image().shape[:2]
      assert cofw.image_size(f, refs[record.image_key]) == (width, height)
