"""Scoring trained SCE-MAE models on another folder in the MTFL layout.

The documented override (`data.eval_name=aflw_m`, `data.eval_root=DIR`,
`data.eval_splits=("test",)`) must make the matching, all-annotation
detection and few-shot modes score on `DIR/testing.txt` without retraining:
the train faces still come from `data.root`, the scored faces only from the
other folder.
"""

import json
import os

import numpy as np
from PIL import Image

from configs import common
from sce_mae_jax import detection
from sce_mae_jax import stage2
from training import loop


def write_mtfl_folder(root, list_file, count, seed, prefix):
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "faces"), exist_ok=True)
  base = np.array([[28, 34], [52, 34], [40, 46], [31, 58], [49, 58]], float)
  lines = []
  for i in range(count):
    pts = base + rng.uniform(-3, 3, base.shape)
    img = rng.integers(0, 256, (80, 80, 3)).astype(np.uint8)
    name = f"faces/{prefix}_{i:02d}.png"
    Image.fromarray(img).save(os.path.join(root, name))
    coords = " ".join(f"{v:.2f}" for v in np.concatenate([pts[:, 0],
                                                           pts[:, 1]]))
    lines.append(f"{name} {coords}")
  with open(os.path.join(root, list_file), "w") as f:
    f.write("\n".join(lines) + "\n")


def tiny_detection_config(train_root, test_root):
  c = common.detection()
  c.data.root = str(train_root)
  c.data.num_val = 4
  c.data.eval_name = "aflw_m"
  c.data.eval_root = str(test_root)
  c.data.eval_splits = ("test",)
  c.data.sanity = "off"
  c.backbone.update(dict(image_size=96, patch_size=8, width=16, depth=3,
                         num_heads=2))
  c.carb.update(dict(layer=3, eta=0.1, num_clusters=2, knn=3))
  c.projector.dim = 8
  c.inference.stride = 8
  c.detection.update(dict(hidden=8, intermediate=2, batch_size=4, epochs=1,
                          fewshot_counts=(1, 2), fewshot_epochs=1,
                          fewshot_epoch_length=8, fewshot_batch_size=4,
                          mean_shape_faces=8))
  return c


def test_modes_score_the_other_folder(tmp_path):
  write_mtfl_folder(tmp_path / "train", "training.txt", 20, 0, "tr")
  write_mtfl_folder(tmp_path / "other", "testing.txt", 6, 1, "te")
  config = tiny_detection_config(tmp_path / "train", tmp_path / "other")
  method = detection.DetectionMethod(config)
  scored = method.eval_records["test"]
  assert len(scored) == 6
  assert all(os.path.basename(r.image_path).startswith("te_") for r in scored)
  assert all(os.path.basename(r.image_path).startswith("tr_")
             for r in method.train_records)
  work = tmp_path / "work"
  match = loop.run_mode("matching", method, config, str(work))
  assert match["num_pairs"] == 3                    # 6 faces -> 3 DVE pairs
  det = loop.run_mode("all_annotations", method, config, str(work))
  assert det["num_train_faces"] == 16               # 20 - 4 val faces
  few = loop.run_mode("fewshot", method, config, str(work))
  assert sorted(few) == [1, 2]
  with open(work / "matching.json") as f:
    assert json.load(f)["num_pairs"] == 3
  # Stage 2's listing of the override is the same folder.
  assert [r.image_path for r in stage2.list_records(
      config, "test", eval_set=True)] == [r.image_path for r in scored]
