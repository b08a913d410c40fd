"""Tests of star_jax/report.py, the eval hook, flip TTA, run.py --checkpoint."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import integrate

from configs import common
from star_jax import method
from tests import test_coordinates
from star_jax import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WFLW_FLAGS = ("pose", "expression", "illumination", "makeup", "occlusion",
              "blur")


# ------------------------------------------------------ independent maths ----

def _np_fr(nmes, t):
  return float(np.mean(np.asarray(nmes, np.float64) > t))


def _np_auc(nmes, t, step=1e-4):
  xs = np.arange(0, t + step, step)
  ced = np.array([np.mean(np.asarray(nmes, np.float64) <= x) for x in xs])
  return float(integrate.simpson(ced, x=xs) / t)


def _nmes(rng, n):
  # 4-decimal values + 5e-5: never on the CED grid (no ties with 0.1 / 0.05).
  return (np.round(rng.uniform(0.0, 0.16, n), 4) + 5e-5).astype(np.float32)


class _Groups:
  """Stands in for StarData: `eval_groups` from fixed per-record flags."""

  def __init__(self, flags):
    self.flags = flags

  def eval_groups(self, split, indices):
    del split
    return {k: np.asarray(v, bool)[np.asarray(indices)]
            for k, v in self.flags.items()}


def _method(scheme, normaliser, threshold, flags, name):
  c = common.star()
  c.data.name = name
  c.data.scheme = scheme
  c.model.num_stacks, c.model.depth, c.model.width = 1, 1, 8
  c.eval.normaliser = normaliser
  c.eval.threshold = threshold
  return method.StarMethod(c, data=_Groups(flags))


def _fake_eval(m, rng, n, split):
  """eval_step-like outputs for raw / EMA (faces in a shuffled order)."""
  outputs = {}
  index = rng.permutation(n).astype(np.int32)
  for variant in ("raw", "ema"):
    out = {"index": index,
           "pred": np.zeros((n, m.scheme.num_points, 2), np.float32)}
    for key in m.normalisers:
      out[key] = _nmes(rng, n)
    outputs[variant] = out
  results = {}
  for variant, suffix in (("raw", ""), ("ema", "_ema")):
    for k, v in m.evaluate(outputs[variant], split).items():
      results[f"{split}{suffix}/{k}"] = v
  return {split: outputs}, results


def _md_row(md, section, label):
  """Cells of the table row starting with `label` after heading `section`."""
  text = md[md.index(section):]
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if cells and cells[0] == label:
      return cells[1:]
  raise AssertionError(f"no row {label!r} after {section!r}:\n{text[:2000]}")


def _random_tree(abstract, seed, scale=0.1):
  """Arrays for an abstract pytree without compiling an initialiser (slow on
  CPU): BatchNorm means 0 / variances 1, optimizer state and integers 0, other
  floats N(0, scale^2)."""
  rng = np.random.RandomState(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if not np.issubdtype(s.dtype, np.floating) or "opt_state" in name or (
        name.endswith("['mean']")):
      return np.zeros(s.shape, s.dtype)
    if name.endswith("['var']"):
      return np.ones(s.shape, s.dtype)
    return (scale * rng.standard_normal(s.shape)).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


# ------------------------------------------------------------------ report ----

def test_wflw_report_matches_numpy(tmp_path):
  rng = np.random.RandomState(0)
  n = 60
  flags = {k: rng.rand(n) < 0.3 for k in WFLW_FLAGS}
  flags["blur"][:] = False                 # an empty subset
  m = _method("wflw", "wflw", 0.1, flags, "wflw")
  assert m.normalisers == {"nme": "wflw_inter_ocular",
                           "nme_inter_pupil": "wflw_inter_pupil"}
  outputs, results = _fake_eval(m, rng, n, "test")
  info = {"checkpoint_dir": "/ck", "which": "best", "step": 7,
          "checkpoint_path": "/ck/checkpoints_best/7", "config": "c.py"}
  m.write_report(str(tmp_path), results, outputs, info)
  with open(tmp_path / "results.json") as f:
    rep = json.load(f)
  assert rep["checkpoint"] == {k: v for k, v in info.items() if k != "config"}
  assert rep["config"] == "c.py"
  assert rep["eval"]["normalisers"] == ["wflw_inter_ocular",
                                        "wflw_inter_pupil"]
  out = outputs["test"]
  for variant in ("raw", "ema"):
    nme = out[variant]["nme"].astype(np.float64)
    idx = out[variant]["index"]
    table = rep["splits"]["test"][variant]["wflw_inter_ocular"]
    assert table["full"]["nme"] == pytest.approx(nme.mean(), rel=1e-12)
    assert table["full"]["fr"] == pytest.approx(_np_fr(nme, 0.1), abs=1e-12)
    assert table["full"]["auc"] == pytest.approx(_np_auc(nme, 0.1), rel=1e-9)
    assert table["full"]["median"] == pytest.approx(np.median(nme))
    for k in WFLW_FLAGS[:-1]:
      sel = nme[flags[k][idx]]
      assert table[k]["count"] == sel.size
      assert table[k]["nme"] == pytest.approx(sel.mean(), rel=1e-12)
      assert table[k]["fr"] == pytest.approx(_np_fr(sel, 0.1), abs=1e-12)
      assert table[k]["auc"] == pytest.approx(_np_auc(sel, 0.1), rel=1e-9)
    assert table["blur"] == {"nme": None, "fr": None, "auc": None,
                             "median": None, "count": 0}
    pupil = rep["splits"]["test"][variant]["wflw_inter_pupil"]["full"]
    assert pupil["nme"] == pytest.approx(
        out[variant]["nme_inter_pupil"].astype(np.float64).mean())
    assert rep["per_image"]["test"]["nme"][variant]["wflw_inter_ocular"] == (
        nme.tolist())
    # The loop's flat metrics and the report's tables agree.
    suffix = "" if variant == "raw" else "_ema"
    assert rep["metrics"][f"test{suffix}/nme"] == pytest.approx(
        table["full"]["nme"], rel=1e-12)
    assert rep["metrics"][f"test{suffix}/pose/auc"] == pytest.approx(
        table["pose"]["auc"], rel=1e-12)
  assert rep["per_image"]["test"]["index"] == out["raw"]["index"].tolist()
  # Markdown: the paper's WFLW layout, values in %, AUC as a fraction.
  md = (tmp_path / "results.md").read_text()
  ema = rep["splits"]["test"]["ema"]["wflw_inter_ocular"]
  section = "## test, EMA parameters"
  header = _md_row(md, section, "Metric")
  assert header == ["Testset", "Pose", "Expression", "Illumination",
                    "Make-up", "Occlusion", "Blur"]
  keys = ("full",) + WFLW_FLAGS
  assert _md_row(md, section, "NME (%)") == [
      f"{100 * ema[k]['nme']:.2f}" for k in keys[:-1]] + ["-"]
  assert _md_row(md, section, "FR@0.1 (%)") == [
      f"{100 * ema[k]['fr']:.2f}" for k in keys[:-1]] + ["-"]
  assert _md_row(md, section, "AUC@0.1") == [
      f"{ema[k]['auc']:.4f}" for k in keys[:-1]] + ["-"]
  e = out["ema"]["nme"].astype(np.float64)
  assert _md_row(md, section, "test (all)")[:5] == [
      str(n), f"{100 * e.mean():.2f}", f"{100 * _np_fr(e, 0.1):.2f}",
      f"{_np_auc(e, 0.1):.4f}", f"{100 * np.median(e):.2f}"]
  assert os.path.getsize(tmp_path / "ced.png") > 0
  pred = np.load(tmp_path / "predictions.npz")
  assert sorted(pred.files) == ["test/ema/pred", "test/index",
                                "test/raw/pred"]


def test_300w_and_cofw_tables(tmp_path):
  rng = np.random.RandomState(1)
  n = 40
  common = rng.rand(n) < 0.7
  m = _method("300w", "300w", 0.05, {"common": common,
                                     "challenge": ~common}, "300w")
  outputs, results = _fake_eval(m, rng, n, "full")
  m.write_report(str(tmp_path / "w300"), results, outputs, {"step": 1})
  md = (tmp_path / "w300" / "results.md").read_text()
  out = outputs["full"]["raw"]
  c = common[out["index"]]
  for key, label in (("nme", "inter-ocular (36, 45)"),
                     ("nme_inter_pupil",
                      "inter-pupil (means of 36-41 and 42-47)")):
    v = out[key].astype(np.float64)
    assert _md_row(md, "## full, raw parameters", label) == [
        f"{100 * v[c].mean():.2f}", f"{100 * v[~c].mean():.2f}",
        f"{100 * v.mean():.2f}"]
  assert _md_row(md, "## full, raw parameters", "NME (%)") == [
      "Common", "Challenge", "Full"]

  m = _method("cofw", "cofw", 0.1, {}, "cofw")
  assert m.normalisers == {"nme": "cofw_inter_pupil",
                           "nme_inter_ocular": "cofw_inter_ocular"}
  outputs, results = _fake_eval(m, rng, n, "test")
  m.write_report(str(tmp_path / "cofw"), results, outputs, {"step": 1})
  md = (tmp_path / "cofw" / "results.md").read_text()
  out = outputs["test"]["ema"]
  assert results["test_ema/nme_inter_ocular"] == pytest.approx(
      out["nme_inter_ocular"].astype(np.float64).mean())
  for key, label in (("nme", "inter-pupil (16, 17)"),
                     ("nme_inter_ocular", "inter-ocular (8, 9)")):
    v = out[key].astype(np.float64)
    assert _md_row(md, "## test, EMA parameters", label) == [
        f"{100 * v.mean():.2f}", f"{100 * _np_fr(v, 0.1):.2f}",
        f"{_np_auc(v, 0.1):.4f}"]
  with open(tmp_path / "cofw" / "results.json") as f:
    assert json.load(f)["eval"]["normaliser"] == "cofw_inter_pupil"


# --------------------------------------------------------------- flip TTA ----

def test_flip_test_in_eval_step_with_a_tiny_model():
  from tests import test_method as tm  # pylint: disable=g-import-not-at-top
  config = tm.tiny_config()
  config.model.num_stacks = 1
  fake = tm.FakeData()
  plain = method.StarMethod(config, data=fake)
  config_tta = tm.tiny_config()
  config_tta.model.num_stacks = 1
  config_tta.eval.flip_test = True
  tta = method.StarMethod(config_tta, data=fake)
  batch = fake.batch
  params, model_state = _random_tree(jax.eval_shape(
      plain.init_variables, jax.random.PRNGKey(0), batch), seed=0)
  x = batch["image"]
  mirror = x[:, :, ::-1]
  both = np.asarray(jax.jit(plain.predict_crop_points)(
      params, model_state, np.concatenate([x, mirror])))
  p, q = both[:4], both[4:]
  perm = plain.scheme.flip_permutation
  expected_crop = 0.5 * (p + test_coordinates.np_flip(q, perm, 32))
  c2i = batch["crop_to_image"].astype(np.float64)
  expected = (np.einsum("bij,bnj->bni", c2i[..., :2], expected_crop)
              + c2i[:, None, :, 2])
  out = jax.jit(tta.eval_step)(params, model_state, batch)
  np.testing.assert_allclose(np.asarray(out["pred"]), expected, atol=2e-3)
  gt = batch["landmarks_original"].astype(np.float64)
  iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
  np.testing.assert_allclose(
      np.asarray(out["nme"]),
      np.linalg.norm(expected - gt, axis=-1).mean(-1) / iod, rtol=1e-4)
  # The model is not flip-equivariant, so TTA changes the prediction (this
  # test would notice TTA not being applied).
  assert np.abs(q - test_coordinates.np_flip(p, perm, 32)).max() > 1e-2
  assert np.abs(expected_crop - p).max() > 5e-3


# ------------------------------------------------------- run.py end-to-end ----

def _snapshot(root):
  out = {}
  for d, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(d, name)
      st = os.stat(path)
      out[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size
                                          if name in files else 0)
  return out


_TINY = {"max_steps": 2, "batch_size": 4, "eval_batch_size": 4,
         "data.synthetic.num_train": 8, "data.synthetic.num_eval": 6,
         "data.synthetic.image_size": 48, "data.crop_size": 32,
         "data.num_workers": 0, "model.num_stacks": 1, "model.depth": 1,
         "model.width": 8, "compilation_cache_dir": ""}


def _tiny_default_config():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "default_config", os.path.join(REPO, "configs", "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in _TINY.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _write_checkpoint(config, workdir, best_step=None):
  """A checkpoint as training writes it (periodic + best, same Checkpointer,
  the train state's structure and config), with random parameters instead of
  trained ones (raw and EMA differ) so that no training step or initialiser
  has to be compiled; saved as step 2."""
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  m = method.StarMethod(config)
  trainer = loop.Trainer(m, config)
  state = _random_tree(trainer.abstract_state, seed=0)
  state = state.replace(step=np.asarray(2, np.int32))
  config_dict = ckpt_lib.config_to_dict(config)
  c = ckpt_lib.Checkpointer(
      workdir, best_metric=config.best_metric if best_step else None,
      async_save=False)
  c.save(2, state, None, {"step": 2}, config_dict, force=True)
  if best_step:
    c.save_best(best_step, state, None, {"step": best_step}, config_dict,
                {config.best_metric: 0.5})
  c.wait()
  c.close()
  return m


def _run_eval(args, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  overrides = [f"--config.{k}={v}" for k, v in _TINY.items()]
  proc = subprocess.run([sys.executable, "run.py",
                         "--config=configs/default.py", "--mode=eval"]
                        + overrides + args,
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  (tmp_path / "eval.log").write_text(proc.stdout + proc.stderr)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  return proc.stdout


def test_run_eval_with_checkpoint_writes_the_report_and_reads_only(tmp_path):
  from data import synthetic  # pylint: disable=g-import-not-at-top
  train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
  config = _tiny_default_config()
  _write_checkpoint(config, str(train_dir))
  before = _snapshot(train_dir)
  # Only checkpoints/ (a Checkpointer opened for writing would add
  # checkpoints_best/ for the config's best_metric).
  out = _run_eval([f"--workdir={eval_dir}", f"--checkpoint={train_dir}"],
                  tmp_path)
  assert _snapshot(train_dir) == before       # nothing written or touched
  assert sorted(os.listdir(eval_dir)) == ["ced.png", "predictions.npz",
                                          "results.json", "results.md"]
  with open(eval_dir / "results.json") as f:
    rep = json.load(f)
  assert rep["checkpoint"]["step"] == 2
  assert rep["checkpoint"]["which"] == "latest"
  assert rep["checkpoint"]["checkpoint_path"] == str(
      train_dir / "checkpoints" / "2")
  assert rep["config"] == "configs/default.py"
  # The values training.loop.evaluate printed are the report's.
  for key in ("test/nme", "test_ema/nme", "test/auc", "test_ema/fr",
              "test/nme_inter_pupil"):
    printed = [l for l in out.splitlines() if l.strip().startswith(key + " =")]
    assert len(printed) == 1, out[-3000:]
    assert float(printed[0].split("=")[1]) == pytest.approx(
        rep["metrics"][key], rel=1e-5)
  # Per-face NMEs against NumPy from the saved predictions and the
  # evaluation faces' ground truth (seed 1, exact points).
  records = synthetic.make_records(6, seed=1, image_size=48)
  gt = np.stack([r.landmarks for r in records]).astype(np.float64)
  npz = np.load(eval_dir / "predictions.npz")
  index = npz["test/index"]
  assert sorted(index.tolist()) == list(range(6))   # padding removed
  means = {}
  for variant in ("raw", "ema"):
    pred = npz[f"test/{variant}/pred"].astype(np.float64)
    g = gt[index]
    nme = np.linalg.norm(pred - g, axis=-1).mean(-1) / np.linalg.norm(
        g[:, 36] - g[:, 45], axis=-1)
    per_image = rep["per_image"]["test"]["nme"][variant]["300w_inter_ocular"]
    np.testing.assert_allclose(per_image, nme, rtol=1e-5)
    full = rep["splits"]["test"][variant]["300w_inter_ocular"]["full"]
    assert full["count"] == 6
    assert full["nme"] == pytest.approx(nme.mean(), rel=1e-5)
    means[variant] = full["nme"]
  assert rep["metrics"]["test/nme"] == pytest.approx(means["raw"], rel=1e-9)
  assert rep["metrics"]["test_ema/nme"] == pytest.approx(means["ema"],
                                                         rel=1e-9)
  assert abs(means["raw"] - means["ema"]) > 1e-4    # two parameter sets
  md = (eval_dir / "results.md").read_text()
  assert _md_row(md, "## test, EMA parameters", "test (all)")[1] == (
      f"{100 * means['ema']:.2f}")
  assert "300W" not in md and "WFLW" not in md   # synthetic: generic table


def test_read_only_lookup_finds_best_and_latest(tmp_path):
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  from training import errors  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  config = _tiny_default_config()
  both, periodic = tmp_path / "both", tmp_path / "periodic"
  _write_checkpoint(config, str(both), best_step=1)
  _write_checkpoint(config, str(periodic))
  before = _snapshot(tmp_path)

  def step(path, which):
    return ckpt_lib.find_checkpoint(path, which,
                                    best_metric="test_ema/nme")[1]
  assert step(str(both), "best") == 1 and step(str(both), "latest") == 2
  assert ckpt_lib.run_config(str(both), which="best", step=1) == (
      ckpt_lib.config_to_dict(config))
  with pytest.raises(errors.MissingInputError, match="checkpoints_best"):
    step(str(periodic), "best")
  assert step(str(periodic), "latest") == 2
  assert _snapshot(tmp_path) == before
  # How the model computes may differ (a checkpoint from before the conv3x3
  # field existed evaluates with it); what it is may not.
  saved = ckpt_lib.run_config(str(periodic), step=2)
  del saved["model"]["conv3x3"]
  config.model.conv3x3 = "winograd"
  loop._check_model_config(  # pylint: disable=protected-access
      saved, ckpt_lib.config_to_dict(config), "x", method.StarMethod)
  config.model.width = 16
  with pytest.raises(ValueError, match="model.width"):
    loop._check_model_config(  # pylint: disable=protected-access
        ckpt_lib.run_config(str(periodic), step=2),
        ckpt_lib.config_to_dict(config), "x",
        method.StarMethod)


def test_missing_checkpoint_dir_is_a_clear_error(tmp_path):
  from training import loop  # pylint: disable=g-import-not-at-top
  from tests import test_method as tm  # pylint: disable=g-import-not-at-top
  config = tm.tiny_config()
  m = method.StarMethod(config, data=tm.FakeData())
  with pytest.raises(FileNotFoundError, match="training workdir"):
    loop.evaluate(m, config, str(tmp_path / "out"),
                  checkpoint_dir=str(tmp_path / "nowhere"))
  assert not (tmp_path / "nowhere").exists()
  with pytest.raises(ValueError, match="only used by --mode=eval"):
    loop.run_mode("train", m, config, str(tmp_path / "out"),
                  checkpoint_dir=str(tmp_path))
