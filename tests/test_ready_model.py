"""The committed ready model (models/): loads, and keeps its stated val NME.

models/yt68_photo.json states the model's yt68 val NME as measured when it
was committed; predicting the val split again (ground-truth crops, as
stated there) must give that value (the artifact is deterministic on one
CPU; the tolerance covers other CPUs' float order).
"""

import json
import os

import numpy as np
import pytest

from data import readers
from star_jax import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")
CARD = os.path.join(REPO, "models", "yt68_photo.json")


def test_ready_model_is_the_predict_default():
  assert predict.DEFAULT_MODEL == os.path.join(REPO, "models",
                                               "yt68_photo.zip")
  assert os.path.isfile(predict.DEFAULT_MODEL)
  card = json.load(open(CARD))
  for key in ("training_command", "commit", "data", "val"):
    assert key in card, key


@pytest.mark.skipif(not os.path.isdir(YT68),
                    reason="../shared/data/yt68 is absent")
def test_ready_model_predicts_within_its_stated_val_nme():
  card = json.load(open(CARD))
  stated = card["val"]["nme_gt_crop"]
  predictor = predict.Predictor.from_path(predict.DEFAULT_MODEL,
                                          batch_size=32)
  records = readers.list_faces("yt68", YT68, "val", num_points=68)
  assert len(records) == card["val"]["faces"]
  nmes = []
  for start in range(0, len(records), 64):
    chunk = records[start:start + 64]
    gts = [np.asarray(r.landmarks, np.float64) for r in chunk]
    faces = predictor.predict([r.load_image() for r in chunk], points=gts)
    for face, gt in zip(faces, gts):
      iod = np.linalg.norm(gt[36] - gt[45])
      nmes.append(np.linalg.norm(face["landmarks"] - gt, axis=-1).mean()
                  / iod)
  assert np.mean(nmes) == pytest.approx(stated, abs=2e-4)
  # And far from the trivial baseline stated beside it.
  assert np.mean(nmes) < 0.6 * card["val"]["nme_mean_shape_gt_crop"]
