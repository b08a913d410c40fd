"""Tests for sce_mae_jax.ablation (Table-4 matching + detection ablation).

A generated MTFL-layout folder (24 random 80 x 80 faces, 8 val / 16 train by
the fixed split) and a tiny ViT (96 px, patch 8, stride 8) keep it fast; the
stage-1 / stage-2 "runs" are orbax checkpoints written here, so no trained
model is needed.
"""

import json
import os

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest

from configs import common
from landmarks import metrics
from sce_mae_jax import ablation
from sce_mae_jax import backbone
from sce_mae_jax import detection
from sce_mae_jax import keypoint_head
from sce_mae_jax import matching
from sce_mae_jax import stage2
from training import checkpoints as ckpt_lib

NUM_FACES, NUM_VAL = 24, 8
EPOCHS = 2


def write_fake_mtfl(root):
  """`root/training.txt` + `root/lfw_5590/*.jpg` (the shared copy's layout)."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "lfw_5590"))
  base = np.array([[28, 34], [52, 34], [40, 46], [31, 58], [49, 58]], float)
  lines = []
  for i in range(NUM_FACES):
    pts = base + rng.uniform(-3, 3, base.shape)
    img = rng.integers(0, 256, (80, 80, 3)).astype(np.uint8)
    for x, y in pts:  # bright blobs at the points: something to detect.
      img[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 255
    name = f"lfw_5590/face_{i:02d}.jpg"
    Image.fromarray(img).save(os.path.join(root, name), quality=95)
    coords = " ".join(f"{v:.2f}" for v in np.concatenate([pts[:, 0],
                                                           pts[:, 1]]))
    lines.append(f"{name.replace('/', chr(92))} {coords}")
  with open(os.path.join(root, "training.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")


def tiny_config(root):
  c = common.sce()
  c.data.root = str(root)
  c.data.num_val = NUM_VAL
  c.backbone.update(dict(image_size=96, patch_size=8, width=16, depth=3,
                         num_heads=2))
  c.carb.update(dict(layer=3, eta=0.1, num_clusters=2, knn=3))
  c.projector.dim = 8
  c.inference.stride = 8
  c.matching.num_pairs = 4
  return c


def detection_config():
  c = ml_collections.ConfigDict()
  c.detection = ml_collections.ConfigDict(dict(
      hidden=8, intermediate=2, batch_size=4, learning_rate=1e-2,
      feature_kind="concat", epochs=EPOCHS, flip=True))
  return c


def random_encoder(model, seed):
  """Seeded numpy encoder params of the right shapes (no XLA compile):
  LayerNorm scales near 1, everything else N(0, 0.05^2)."""
  shapes = jax.eval_shape(lambda: backbone.init_encoder_params(model.encoder))
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    x = rng.normal(0.0, 0.05, s.shape).astype(np.float32)
    return x + 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else x
  return jax.tree_util.tree_map_with_path(leaf, shapes)


def save_run(workdir, params):
  ckpt = ckpt_lib.Checkpointer(str(workdir), async_save=False)
  ckpt.save(1, {"step": np.int32(1), "params": params}, None, {"step": 1},
            {"method": "test"}, force=True)
  ckpt.wait()
  ckpt.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ablation")
  write_fake_mtfl(str(tmp / "mtfl"))
  config = tiny_config(tmp / "mtfl")
  model = stage2.FeatureModel(config)
  enc1, enc2 = random_encoder(model, 7), random_encoder(model, 11)
  proj = jax.tree.map(np.asarray,
                      model.init_projector(jax.random.PRNGKey(5)))
  save_run(tmp / "stage1", {"encoder": enc1, "decoder": {"w": np.ones(2)}})
  save_run(tmp / "stage2", {"encoder": enc2, "projector": proj})
  proj_c = jax.tree.map(lambda x: np.asarray(x)[::-1].copy(), proj)
  save_run(tmp / "stage2_no_lcr", {"encoder": enc1, "projector": proj_c})
  full = ablation.run_ablation(
      config, str(tmp / "stage1"), str(tmp / "stage2"), str(tmp / "full"),
      stage2_no_lcr_workdir=str(tmp / "stage2_no_lcr"),
      stage2_cl_workdir=str(tmp / "stage2"),
      detection_config=detection_config(), supervised_epochs=1,
      log=lambda *_: None)
  matching_only = ablation.run_ablation(
      config, "", "", str(tmp / "skip"),
      detection_config=detection_config(), skip_detection=True,
      log=lambda *_: None)
  return dict(tmp=tmp, config=config, model=model, full=full,
              matching_only=matching_only)


def table_rows(path):
  """Markdown data lines -> {method: [cells]}."""
  with open(path) as f:
    lines = [l for l in f.read().splitlines() if l.startswith("| (")]
  return {cells[0]: cells[1:] for cells in
          ([c.strip() for c in l.strip("|").split("|")] for l in lines)}


@pytest.mark.parametrize("which", ["full", "skip"])
def test_markdown_agrees_with_json(runs, which):
  out = runs["tmp"] / which
  with open(out / "ablation.json") as f:
    saved = json.load(f)
  rows = table_rows(out / "ablation.md")
  assert list(rows) == [r.name for r in ablation.ROWS]
  for row in ablation.ROWS:
    res, cells = saved[row.name], rows[row.name]
    if "skipped" in res:
      assert cells[1] == f"skipped ({res['skipped']})"
      assert set(res) == {"skipped"}
      continue
    assert cells[1] == f"{res['same']:.3f}" and cells[2] == f"{res['diff']:.3f}"
    if which == "full":
      assert cells[3] == f"{res['nme']:.2f}"
    else:
      assert cells[3] == "not run"
  in_memory = runs["full" if which == "full" else "matching_only"]
  assert json.loads(json.dumps(in_memory, sort_keys=True,
                              default=matching.json_default)) == saved


def test_full_run_rows_and_keys(runs):
  full = runs["full"]
  for row in ablation.ROWS:
    res = full[row.name]
    assert {"same", "diff", "nme", "nme_median", "same_errors"} <= set(res)
    # Every training face (and its mirror image) trains the head.
    assert res["detection_train_faces"] == NUM_FACES - NUM_VAL
    assert res["detection_train_samples"] == 2 * (NUM_FACES - NUM_VAL)
    assert res["detection_epochs"] == EPOCHS
    assert len(res["detection_history"]) == EPOCHS
    assert res["feature_kind"] == row.kind
    assert np.isfinite(res["nme"]) and res["nme"] > 0
  # (c), (d): matching on the projector, detection on the configured kind;
  # their stage-2 checkpoints differ, so do their numbers.
  c, d = full[ablation.ROWS[2].name], full[ablation.ROWS[3].name]
  for r in (c, d):
    assert r["feature_kind"] == "projector"
    assert r["detection_feature_kind"] == "concat"
  assert c["nme"] != d["nme"]
  assert "stage2_lcr" in c and "stage2_lcr" not in d
  # (e): the same checkpoint as (d) seen through CL's spatial-softmax
  # projector gives other matches.
  e = full[ablation.ROWS[4].name]
  assert (e["same"], e["diff"]) != (d["same"], d["diff"])
  # A stage-1 encoder differs from the random one: its rows differ.
  a, b = (full[r.name] for r in ablation.ROWS[:2])
  assert a["nme"] != b["nme"]
  sup = full[ablation.SUPERVISED]
  assert sup["supervised_epochs"] == 1 and np.isfinite(sup["nme"])
  assert set(full["bootstrap"]) == {"d-b", "b-identity", "d-identity"}


def test_references_equal_hand_computations(runs):
  """Identity and mean-shape matchers on the same DVE pairs, by hand."""
  config = runs["config"]
  val = stage2.load_arrays(config, stage2.list_records(config, "val"))
  train = stage2.load_arrays(config, stage2.list_records(config, "train"))
  pairs = matching.make_pairs(val["image"], val["landmarks"],
                              config.matching.num_pairs, config.seed,
                              dict(config.matching.warp))
  scale = 70.0 / 96.0
  src = np.asarray(pairs["source_points"], np.float64)
  mean = np.mean(np.asarray(train["landmarks"], np.float64), axis=0)
  for tag in ("same", "diff"):
    tgt = np.asarray(pairs[f"{tag}_points"], np.float64)
    ident = np.linalg.norm(src - tgt, axis=-1).mean() * scale
    mshape = np.linalg.norm(mean - tgt, axis=-1).mean() * scale
    for which in ("full", "matching_only"):
      got = runs[which]
      np.testing.assert_allclose(got[ablation.IDENTITY][tag], ident,
                                 rtol=1e-5)
      np.testing.assert_allclose(got[ablation.MEAN_SHAPE][tag], mshape,
                                 rtol=1e-5)


def test_bootstrap_uses_the_saved_per_pair_errors(runs):
  saved = np.load(runs["tmp"] / "full" / "matching_errors.npz")
  for tag in ("same", "diff"):
    want = metrics.paired_bootstrap(saved[f"d_{tag}"], saved[f"b_{tag}"],
                                     seed=runs["config"].seed)
    got = runs["full"]["bootstrap"]["d-b"][tag]
    assert got["mean_difference"] == pytest.approx(want["mean_difference"])
    assert (got["low"], got["high"]) == pytest.approx((want["low"],
                                                       want["high"]))
    d = runs["full"][ablation.ROWS[3].name]
    np.testing.assert_allclose(saved[f"d_{tag}"], d[f"{tag}_errors"])


def test_skip_detection_and_missing_workdirs(runs):
  res = runs["matching_only"]
  a, b, c, d, e = (res[row.name] for row in ablation.ROWS)
  assert e == {"skipped": "no --stage2_cl_workdir"}
  assert b == {"skipped": "no --stage1_workdir"}
  assert c == {"skipped": "no --stage2_no_lcr_workdir"}
  assert d == {"skipped": "no --stage2_workdir"}
  assert not {"nme", "nme_median", "detection_epochs"} & set(a)
  # Matching does not depend on whether detection ran (same seed).
  full_a = runs["full"][ablation.ROWS[0].name]
  assert (a["same"], a["diff"]) == (full_a["same"], full_a["diff"])


def float64_nme(pred, gt):
  """Mean point error / eye-centre distance (points 0, 1), in %."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  iod = np.linalg.norm(gt[:, 0] - gt[:, 1], axis=-1)
  return 100.0 * np.linalg.norm(pred - gt, axis=-1).mean(-1) / iod


def test_nme_matches_independent_computation(runs):
  """Row (d): all training faces + mirrors, the configured kind ("concat"),
  head and schedule -> the same NME, recomputed here with a float64 NME."""
  config, model, tmp = runs["config"], runs["model"], runs["tmp"]
  row = ablation.ROWS[3]
  train = stage2.load_arrays(config, stage2.list_records(config, "train"))
  assert train["image"].shape[0] == NUM_FACES - NUM_VAL
  val = stage2.load_arrays(config, stage2.list_records(config, "val"))
  params = detection.load_stage2_params(config, model, str(tmp / "stage2"))
  settings = ablation.detection_settings(config, detection_config())
  cfg = config.copy_and_resolve_references()
  cfg.detection = settings
  head = detection.head_from_config(cfg, 5, "head",
                                    detection.norm_groups_for("concat", model))
  mirrored, mirrored_lms = detection.mirror_faces(train["image"],
                                                  train["landmarks"])
  feats = detection.cache_features(
      model, params, np.concatenate([train["image"], mirrored]), "concat")
  val_feats = detection.cache_features(model, params, val["image"], "concat")
  out = detection.train_all_annotations(
      head, feats, np.concatenate([train["landmarks"], mirrored_lms]),
      val_feats, val["landmarks"], 96,
      detection.all_annotation_settings(settings, seed=config.seed),
      log=None)
  pred = keypoint_head.predict(head, out["params"], val_feats, 96)
  want = float64_nme(pred, val["landmarks"])
  got = runs["full"][row.name]
  np.testing.assert_allclose(got["nme"], want.mean(), rtol=1e-4)
  np.testing.assert_allclose(got["nme_median"], np.median(want), rtol=1e-4)
  # The mean-shape reference: the mean training landmarks for every val face.
  mean = np.mean(np.asarray(train["landmarks"], np.float64), axis=0)
  ref = float64_nme(np.broadcast_to(mean, val["landmarks"].shape),
                    val["landmarks"])
  got = runs["full"][ablation.MEAN_SHAPE]
  np.testing.assert_allclose(got["nme"], ref.mean(), rtol=1e-6)
  assert "nme" not in runs["matching_only"][ablation.MEAN_SHAPE]


def test_detection_settings_precedence():
  base = common.detection().detection
  plain = common.sce()          # no detection section.
  s = ablation.detection_settings(plain)
  assert s.to_dict() == base.to_dict()
  s = ablation.detection_settings(plain, detection_config())
  assert s.hidden == 8 and s.intermediate == 2
  assert s.normaliser == base.normaliser   # filled from the defaults.
  main = common.detection()
  main.detection.hidden = 32
  s = ablation.detection_settings(main, detection_config())
  assert s.hidden == 32                    # --config wins.
  bad = ml_collections.ConfigDict({"detection": {"hiden": 3}})
  with pytest.raises(ValueError, match="hiden"):
    ablation.detection_settings(plain, bad)


def test_rows_selection(runs, tmp_path):
  """--rows: unselected rows are listed as such; selected ones equal the
  full run's; unknown letters are refused."""
  res = ablation.run_ablation(
      runs["config"], "", "", str(tmp_path), rows=("a",),
      detection_config=detection_config(), skip_detection=True,
      log=lambda *_: None)
  names = [r.name for r in ablation.ROWS]
  assert all(res[n] == {"skipped": "not selected (--rows)"} for n in names[1:])
  full_a = runs["full"][names[0]]
  assert (res[names[0]]["same"], res[names[0]]["diff"]) == (full_a["same"],
                                                            full_a["diff"])
  with pytest.raises(ValueError, match="unknown rows"):
    ablation.run_ablation(runs["config"], "", "", str(tmp_path), rows=("f",))
