"""Tests of star_jax/predict.py: crops, inverse maps, batching, errors."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from data import pipeline
from data import readers
from data import transforms
from data.readers import pts as pts_reader
from star_jax import predict
from tests import test_export
from tests import test_inference
from tests import test_readers_fuzz

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")
S = 64
N = 3
# Fixed crop-pixel "predictions" for the fixed-function model.
FIXED = np.array([[0.0, 0.0], [10.25, 40.5], [63.0, 31.5]])


def _fixed_fn(crops):
  return np.tile(FIXED, (len(crops), 1, 1))


def _inverse_reference(points_crop, center, side):
  """Crop -> image for a crop whose `side` px face box is centred at `center`.

  Written from the convention (zoom k = S / side, centre -> ((S-1)/2, (S-1)/2)),
  independently of data/transforms.py.
  """
  k = S / side
  return (np.asarray(points_crop, np.float64) - (S - 1) / 2.0) / k + center


def test_points_map_back_as_the_crop_inverse():
  p = predict.Predictor(_fixed_fn, S, crop_mode="points", batch_size=2)
  img = np.zeros((120, 200, 3), np.uint8)
  box = np.array([30.0, 20.0, 110.0, 80.0])          # 80 x 60 px
  pts = np.array([[50.0, 30.0], [90.0, 75.0], [70.0, 44.0]])  # 40 x 45 px
  res = p.predict([img, img, img], boxes=[box, None, None],
                  points=[None, pts, None])
  # --box on a crop_mode "points" model: landmark-box rule, side = 80 * 1.25.
  np.testing.assert_allclose(
      res[0]["landmarks"], _inverse_reference(FIXED, [70.0, 50.0], 100.0),
      atol=1e-9)
  # --landmarks: box of the points, side = 45 * 1.25 (eval crop_mode points).
  np.testing.assert_allclose(
      res[1]["landmarks"], _inverse_reference(FIXED, [70.0, 52.5], 56.25),
      atol=1e-9)
  # Whole image: centre of the pixel grid, the longer side (200) fills S.
  np.testing.assert_allclose(
      res[2]["landmarks"], _inverse_reference(FIXED, [99.5, 59.5], 200.0),
      atol=1e-9)
  assert [r["box_source"] for r in res] == ["box", "landmarks", "whole_image"]
  # A model trained with face boxes (crop_mode auto/box): public box rule,
  # side = min(80, 60) * 1.05.
  q = predict.Predictor(_fixed_fn, S, crop_mode="auto")
  np.testing.assert_allclose(
      q.predict([img], boxes=[box])[0]["landmarks"],
      _inverse_reference(FIXED, [70.0, 50.0], 63.0), atol=1e-9)


def _centroid_fn(crops):
  """One point: the brightness-weighted centroid of each crop (crop pixels)."""
  w = crops[..., 0].astype(np.float64)
  ys, xs = np.mgrid[:crops.shape[1], :crops.shape[2]]
  total = np.maximum(w.sum((1, 2)), 1e-9)
  return np.stack([(w * xs).sum((1, 2)) / total,
                   (w * ys).sum((1, 2)) / total], -1)[:, None]


def test_crop_content_and_inverse_agree_on_a_known_blob():
  # A Gaussian blob at a sub-pixel position; the crop model finds it in the
  # crop and predict maps it back: it must land on the blob in the image.
  h, w = 150, 170
  rng = np.random.RandomState(0)
  for _ in range(3):
    cx, cy = rng.uniform(60, 110), rng.uniform(50, 100)
    yy, xx = np.mgrid[:h, :w]
    blob = 255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 4.0 ** 2))
    img = np.repeat(blob[..., None], 3, -1).round().astype(np.uint8)
    p = predict.Predictor(_centroid_fn, S, crop_mode="points")
    box = [cx - 30.0, cy - 22.0, cx + 25.0, cy + 30.0]
    got = p.predict([img], boxes=[box])[0]["landmarks"][0]
    np.testing.assert_allclose(got, [cx, cy], atol=0.03)  # measured <= 0.006


@pytest.fixture
def workdir(tmp_path_factory):
  """The tiny training workdir shared by the test session."""
  return test_inference.shared_workdir(tmp_path_factory)[0]


def _write_images(folder, sizes, seed=0):
  rng = np.random.RandomState(seed)
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, (h, w) in enumerate(sizes):
    path = folder / f"face{i}.png"
    Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    paths.append(str(path))
  return paths


def test_batched_equals_one_by_one_and_artifact_equals_checkpoint(
    tmp_path_factory, tmp_path):
  workdir, artifact, _ = test_export.shared_artifact(tmp_path_factory)
  paths = _write_images(tmp_path / "in", [(80, 90), (100, 70), (64, 64)])
  images = [np.asarray(Image.open(p)) for p in paths]
  boxes = [None, [10, 20, 60, 90], None]
  one = predict.Predictor.from_path(workdir, batch_size=1).predict(
      images, boxes=boxes)
  batched = predict.Predictor.from_path(workdir, batch_size=2).predict(
      images, boxes=boxes)
  from_artifact = predict.Predictor.from_path(artifact, batch_size=2).predict(
      images, boxes=boxes)
  for a, b, c in zip(one, batched, from_artifact):
    np.testing.assert_allclose(a["landmarks"], b["landmarks"], atol=1e-4)
    np.testing.assert_allclose(a["landmarks"], c["landmarks"], atol=1e-4)
    assert a["landmarks"].shape == (68, 2)
  # Different images give different predictions (the model is really run).
  assert not np.allclose(one[0]["landmarks_crop"], one[2]["landmarks_crop"])


def test_cli_bad_image_reported_others_written(workdir, tmp_path, capsys):
  folder = tmp_path / "in"
  paths = _write_images(folder, [(70, 80), (90, 60)])
  (folder / "broken.jpg").write_bytes(b"not a jpeg")
  (folder / "notes.txt").write_text("ignored")
  before = {p: os.stat(folder / p).st_mtime_ns for p in os.listdir(folder)}
  out = tmp_path / "out"
  code = predict.main(["--checkpoint", workdir, "--images", str(folder),
                       "--out", str(out), "--batch_size", "2",
                       "--detector", "none"])
  err = capsys.readouterr().err
  assert code == 1
  assert "broken.jpg" in err and "cannot decode" in err
  assert sorted(os.listdir(out)) == ["face0.json", "face0.png", "face1.json",
                                     "face1.png"]
  assert sorted(os.listdir(folder)) == sorted(before)   # nothing added there.
  assert {p: os.stat(folder / p).st_mtime_ns
          for p in os.listdir(folder)} == before
  image_record = json.loads((out / "face1.json").read_text())
  assert image_record["width"] == 60 and image_record["detector"] is None
  [record] = image_record["faces"]
  assert record["box_source"] == "whole_image"
  c2i = np.array(record["crop_to_image"])
  crop = np.array(record["landmarks_crop"])
  np.testing.assert_allclose(np.array(record["landmarks"]),
                             crop @ c2i[:, :2].T + c2i[:, 2], atol=1e-3)
  overlay = np.asarray(Image.open(out / "face1.png"))
  k = overlay.shape[0] // 90           # figures.landmark_overlay upscales.
  assert overlay.shape == (90 * k, 60 * k, 3)
  plain = np.asarray(Image.open(paths[1])).repeat(k, 0).repeat(k, 1)
  assert np.any(overlay != plain)      # the points were drawn.


def test_box_errors(workdir, tmp_path, capsys):
  [path] = _write_images(tmp_path / "in", [(50, 60)])
  out = tmp_path / "out"
  code = predict.main(["--checkpoint", workdir, "--image", path, "--box",
                       "100,100,150,160", "--out", str(out)])
  err = capsys.readouterr().err
  assert code == 1 and "face0.png" in err and "outside the image" in err
  assert not os.path.exists(out / "face0.json")
  for bad in ("1,2,3", "a,b,c,d", "10,10,5,20"):
    assert predict.main(["--checkpoint", workdir, "--image", path, "--box",
                         bad, "--out", str(out)]) == 2
    assert "x1,y1,x2,y2" in capsys.readouterr().err
  # Mostly outside (70 % of the box) is an error, a face cut by the border
  # (20 % outside) is not.
  with pytest.raises(ValueError, match="70 % outside"):
    predict.check_box_in_image([-70, 0, 30, 49], 60, 50)
  predict.check_box_in_image([-10, 0, 40, 49], 60, 50)
  # Writing next to the input is refused before anything runs.
  assert predict.main(["--checkpoint", workdir, "--image", path, "--out",
                       str(tmp_path / "in")]) == 2
  assert "separate output folder" in capsys.readouterr().err
  assert os.listdir(tmp_path / "in") == ["face0.png"]


def test_pts_landmarks_give_the_eval_crop(workdir, tmp_path):
  [path] = _write_images(tmp_path / "in", [(120, 110)])
  pts = np.array([[30.0, 40.0], [80.0, 45.0], [55.0, 100.0]])
  pts_path = str(tmp_path / "face0.pts")
  pts_reader.write_pts(pts_path, pts)        # 1-based on disk.
  out = tmp_path / "out"
  assert predict.main(["--checkpoint", workdir, "--image", path,
                       "--landmarks", pts_path, "--out", str(out)]) == 0
  [record] = json.loads((out / "face0.json").read_text())["faces"]
  assert record["box_source"] == "landmarks"
  np.testing.assert_allclose(record["box"], [30, 40, 80, 100], atol=1e-5)
  # Crop: centre (55, 70), side 60 * 1.25 = 75 -> crop_to_image.
  k = S / 75.0
  expected = np.array([[1 / k, 0, 55 - (S - 1) / 2 / k],
                       [0, 1 / k, 70 - (S - 1) / 2 / k]])
  np.testing.assert_allclose(record["crop_to_image"], expected, atol=1e-5)


@pytest.mark.skipif(not os.path.isdir(YT68),
                    reason="../shared/data/yt68 is absent")
def test_yt68_csv_row_gives_the_eval_pipeline_crop(workdir, tmp_path):
  listing = readers.read_dataset("yt68", YT68, "val")
  records = list(listing)[:2]
  csv = os.path.join(YT68, "val.csv")
  out = tmp_path / "out"
  for record in records:
    assert predict.main(["--checkpoint", workdir, "--image",
                         record.image_path, "--landmarks", csv, "--out",
                         str(out)]) == 0
    stem = os.path.splitext(os.path.basename(record.image_path))[0]
    [got] = json.loads((out / f"{stem}.json").read_text())["faces"]
    sample = pipeline.make_sample(
        record, record.load_image(), 0,
        pipeline.CropConfig(crop_size=S, num_points=68, crop_mode="points"),
        None)
    np.testing.assert_allclose(got["crop_to_image"], sample["crop_to_image"],
                               rtol=1e-6, atol=1e-4)
    assert got["box_source"] == "landmarks"


def _fixed_with_covariance(crops):
  """FIXED points with a known, different covariance per point (crop px^2)."""
  cov = np.array([[[4.0, 1.0], [1.0, 2.0]], [[9.0, 0.0], [0.0, 1.0]],
                  [[1.0, -0.5], [-0.5, 3.0]]])
  b = len(crops)
  return {"landmarks_crop": np.tile(FIXED, (b, 1, 1)),
          "covariance_crop": np.tile(cov, (b, 1, 1, 1))}


def test_uncertainty_maps_to_original_pixels():
  p = predict.Predictor(_fixed_with_covariance, S, crop_mode="points")
  img = np.zeros((120, 200, 3), np.uint8)
  box = np.array([30.0, 20.0, 110.0, 80.0])   # side 100 -> 100 / S px per px.
  [res] = p.predict([img], boxes=[box])
  k = 100.0 / S
  crop_cov = _fixed_with_covariance(img[None])["covariance_crop"][0]
  np.testing.assert_allclose(res["covariance"], crop_cov * k * k, atol=1e-9)
  # std and major axis: float64 eigh, by hand for the diagonal point.
  np.testing.assert_allclose(res["std"][1], [1.0 * k, 3.0 * k], atol=1e-9)
  np.testing.assert_allclose(res["major_axis"][1], [1.0, 0.0], atol=1e-9)
  for c, (lo, hi), v in zip(res["covariance"], res["std"],
                            res["major_axis"]):
    np.testing.assert_allclose(c @ v, hi * hi * v, atol=1e-9)
    np.testing.assert_allclose(np.linalg.eigvalsh(c), [lo * lo, hi * hi],
                               atol=1e-9)
  # spread: mean major std in crop px over the crop side (scale-free).
  major = [np.sqrt(np.linalg.eigvalsh(c)[1]) for c in crop_cov]
  assert res["spread"] == pytest.approx(np.mean(major) / S, abs=1e-12)


class _FakeDetection:
  def __init__(self, box, score):
    self.box, self.score = np.asarray(box, np.float64), score


class _FakeDetector:
  min_face_size = 30

  def __init__(self, boxes):
    self.boxes = boxes

  def __call__(self, image):
    return [_FakeDetection(b, s) for b, s in self.boxes]


class _ShiftCalibration:
  """A stand-in calibration: centre moved down by 10 % of the box width."""

  def apply(self, box):
    x1, y1, x2, y2 = box
    return (np.array([(x1 + x2) / 2, (y1 + y2) / 2 + 0.1 * (x2 - x1)]),
            (x2 - x1) / 200.0)


def test_every_detected_face_predicted_in_detector_order(tmp_path,
                                                        monkeypatch):
  p = predict.Predictor(_fixed_fn, S, crop_mode="points", batch_size=2)
  boxes = [([100.0, 10.0, 160.0, 70.0], 0.9), ([10.0, 20.0, 50.0, 60.0], 0.7),
           ([60.0, 50.0, 90.0, 80.0], 0.5)]
  paths = _write_images(tmp_path / "in", [(90, 180), (90, 180)])
  written, failures = predict.predict_files(
      p, paths, str(tmp_path / "out"), detector=_FakeDetector(boxes),
      detector_name="fake")
  assert not failures and len(written) == 2
  record = json.loads(open(written[1]).read())
  assert record["detector"] == "fake"
  faces = record["faces"]
  assert [f["detector_score"] for f in faces] == [0.9, 0.7, 0.5]
  for face, (box, _) in zip(faces, boxes):
    # Public rule: centre = box centre, side = min(w, h) * 1.05.
    centre = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
    side = min(box[2] - box[0], box[3] - box[1]) * 1.05
    np.testing.assert_allclose(face["landmarks"],
                               _inverse_reference(FIXED, centre, side),
                               atol=1e-3)
    assert face["box_source"] == "detector" and face["box"] == box
  # With a calibration for this detector, its map is used instead.
  monkeypatch.setattr(p, "calibration_for", lambda name: _ShiftCalibration())
  [face] = predict.image_crops(
      p, np.zeros((90, 180, 3), np.uint8),
      detector=_FakeDetector(boxes[:1]), detector_name="fake")
  assert face["box_source"] == "detector_calibrated"
  np.testing.assert_allclose(
      transforms.apply_affine(face["crop_to_image"], FIXED),
      _inverse_reference(FIXED, [130.0, 46.0], 60.0), atol=1e-9)
  # No face: a message naming the detector and its minimum size.
  with pytest.raises(ValueError, match="no face found by the fake detector "
                     r"\(it finds faces of at least 30 px\)"):
    predict.image_crops(p, np.zeros((90, 180, 3), np.uint8),
                        detector=_FakeDetector([]), detector_name="fake")


def test_several_images_all_predicted(workdir, tmp_path, capsys):
  paths = _write_images(tmp_path / "in", [(70, 80), (90, 60), (64, 64)])
  grey = tmp_path / "in" / "grey.png"
  Image.fromarray(np.full((50, 40), 128, np.uint8)).save(grey)
  rgba = tmp_path / "in" / "rgba.png"
  Image.fromarray(np.full((50, 40, 4), 200, np.uint8)).save(rgba)
  out = tmp_path / "out"
  args = ["--checkpoint", workdir, "--out", str(out), "--detector", "none"]
  for path in paths + [str(grey), str(rgba)]:
    args += ["--image", path]
  assert predict.main(args) == 0
  assert sorted(f for f in os.listdir(out) if f.endswith(".json")) == [
      "face0.json", "face1.json", "face2.json", "grey.json", "rgba.json"]
  # Heatmap models report their uncertainty.
  [face] = json.loads((out / "grey.json").read_text())["faces"]
  assert np.asarray(face["covariance"]).shape == (68, 2, 2)
  assert face["spread"] > 0


# ------------------------------------------------------ hostile inputs ----

def _hostile_folder(folder):
  """Good images (RGB, grey, RGBA) next to every kind of broken one."""
  folder.mkdir(parents=True)
  rng = np.random.RandomState(0)
  Image.fromarray(rng.randint(0, 256, (60, 70, 3), dtype=np.uint8)).save(
      folder / "good.png")
  Image.fromarray(np.full((50, 40), 128, np.uint8)).save(folder / "grey.png")
  Image.fromarray(np.full((50, 40, 4), 200, np.uint8)).save(
      folder / "rgba.png")
  Image.fromarray(rng.randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(
      folder / "full.jpg", quality=90)
  data = (folder / "full.jpg").read_bytes()
  (folder / "truncated.jpg").write_bytes(data[:len(data) // 2])
  (folder / "random.jpg").write_bytes(rng.bytes(3000))
  (folder / "empty.png").write_bytes(b"")
  (folder / "folder.png").mkdir()
  os.symlink(folder / "loop_b.png", folder / "loop_a.png")
  os.symlink(folder / "loop_a.png", folder / "loop_b.png")
  os.symlink(folder / "gone.png", folder / "dangling.png")
  test_readers_fuzz.huge_png(folder / "huge.png")
  expected = {
      "truncated.jpg": "cannot decode image", "random.jpg": "cannot decode",
      "empty.png": "the file is empty", "folder.png": "is a folder",
      "loop_a.png": "symbolic link that does not resolve",
      "loop_b.png": "symbolic link that does not resolve",
      "dangling.png": "symbolic link that does not resolve",
      "huge.png": "image too large to decode"}
  return ["good.png", "grey.png", "rgba.png", "full.jpg"], expected


@pytest.mark.parametrize("how", ["--image", "--images"])
def test_hostile_images_each_named_others_written_inputs_untouched(
    tmp_path, capsys, monkeypatch, how):
  p = predict.Predictor(_fixed_fn, S, crop_mode="points", batch_size=2)
  monkeypatch.setattr(predict.Predictor, "from_path",
                      classmethod(lambda cls, *a, **k: p))
  folder = tmp_path / "in"
  good, bad = _hostile_folder(folder)
  before = test_readers_fuzz.tree_state(folder)
  out = tmp_path / "out"
  args = ["--out", str(out), "--detector", "none"]
  if how == "--image":
    for name in sorted(good + list(bad)):
      args += ["--image", str(folder / name)]
  else:
    args += ["--images", str(folder)]
  code = predict.main(args)
  err = capsys.readouterr().err
  assert code == 1
  assert "Traceback" not in err
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert len(lines) == len(bad), err
  for name, reason in bad.items():
    [line] = [l for l in lines if l.startswith(f"error: {name}: ")]
    assert reason in line, line
  assert sorted(f for f in os.listdir(out) if f.endswith(".json")) == sorted(
      os.path.splitext(n)[0] + ".json" for n in good)
  assert test_readers_fuzz.tree_state(folder) == before          # nothing written to inputs.


def test_hostile_landmarks_and_video_are_named(tmp_path, capsys, monkeypatch):
  p = predict.Predictor(_fixed_fn, S, crop_mode="points", batch_size=1)
  monkeypatch.setattr(predict.Predictor, "from_path",
                      classmethod(lambda cls, *a, **k: p))
  [path] = _write_images(tmp_path / "in", [(60, 50)])
  out = str(tmp_path / "out")
  csv = tmp_path / "lm.csv"
  for values, reason in (("1e30,2,3,4", "lies more than 10 image sides "
                          "outside"), ("nan,nan,nan,nan", "no finite landmark"),
                         ("inf,1,-inf,2", "no finite landmark")):
    csv.write_text(f"face0.png,{values}\n")
    code = predict.main(["--image", path, "--landmarks", str(csv), "--out",
                         out])
    err = capsys.readouterr().err
    assert code == 1 and f"error: face0.png: unusable --landmarks" in err
    assert reason in err and "Traceback" not in err
  # A binary csv: its rows are warned about, then one error line (exit 2).
  csv.write_bytes(np.random.RandomState(0).bytes(500).replace(b"\n", b"\xff"))
  code = predict.main(["--image", path, "--landmarks", str(csv), "--out",
                       out])
  err = capsys.readouterr().err
  assert code == 2 and "not UTF-8 text" in err and "no usable rows" in err
  assert "Traceback" not in err
  # A video of random bytes: named, the exit status 1, no traceback.
  video = tmp_path / "clip.mp4"
  video.write_bytes(np.random.RandomState(1).bytes(5000))
  code = predict.main(["--video", str(video), "--out", out, "--no_overlay"])
  err = capsys.readouterr().err
  assert code == 1 and f"error: {video}: cannot read video" in err
  assert "Traceback" not in err
