"""Tests of run.py: interrupted runs resume exactly; eval and summary modes.

Also: summary needs no data; user errors print one `error:` line and exit 2
without a traceback, bugs keep theirs; --mode=eval of another folder lists
only the split it scores.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import test_loop as toy
from training import checkpoints as ckpt_lib
from training import loop

REPO = toy.REPO
_CONFIG = """
from tests.test_loop import toy_config

def get_config():
  return toy_config(num_epochs=30, checkpoint_every_steps=8,
                    log_every_steps=4, eval_every_epochs=15,
                    data_delay_s=0.002)
"""


class _Proc:
  """A run.py subprocess whose output goes to a file (no pipe to fill)."""

  def __init__(self, args, log_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    self.log_path = log_path
    self._log = open(log_path, "w")
    self.popen = subprocess.Popen(
        [sys.executable, "run.py", *args], cwd=REPO, env=env,
        stdout=self._log, stderr=subprocess.STDOUT, text=True)

  def poll(self):
    return self.popen.poll()

  def kill(self):
    self.popen.send_signal(signal.SIGKILL)
    self.popen.wait()
    self._log.close()

  def output(self, timeout=300):
    self.popen.wait(timeout=timeout)
    self._log.close()
    with open(self.log_path) as f:
      return f.read()

  @property
  def returncode(self):
    return self.popen.returncode


_COUNTER = [0]


def _run(args, tmp_path=None):
  _COUNTER[0] += 1
  log = os.path.join(str(tmp_path or "/tmp"), f"run_{os.getpid()}_{_COUNTER[0]}.log")
  return _Proc(args, log)


def _committed_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def test_interrupted_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
  config_path = tmp_path / "toy_config.py"
  config_path.write_text(_CONFIG)
  workdir = str(tmp_path / "interrupted")
  proc = _run([f"--config={config_path}", f"--workdir={workdir}"], tmp_path)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = _committed_steps(workdir)
    if steps and steps[-1] >= 16:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be interrupted:\n" + (
      proc.output()[-3000:])
  proc.kill()
  killed_at = _committed_steps(workdir)[-1]
  assert 16 <= killed_at < 120

  proc = _run([f"--config={config_path}", f"--workdir={workdir}"], tmp_path)
  out = proc.output()
  assert proc.returncode == 0, out[-3000:]
  resumed = [l for l in out.splitlines() if l.startswith("resumed from")]
  assert len(resumed) == 1 and f"(step {killed_at})" in resumed[0], out[-2000:]

  # The same experiment without interruption, in this process.
  config = toy.toy_config(num_epochs=30, checkpoint_every_steps=8,
                          log_every_steps=4, eval_every_epochs=15)
  reference = loop.train(toy.ToyMethod(config), config,
                         str(tmp_path / "straight"))
  trainer = loop.Trainer(toy.ToyMethod(config), config)
  c = ckpt_lib.Checkpointer(workdir)
  assert c.latest_step() == 120
  state, _, _, _ = c.restore(120, trainer.abstract_state)
  c.close()
  for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # --mode=eval restores the last checkpoint and reproduces the final
  # in-training evaluation.
  final = [l for l in out.splitlines() if "val_ema/mse =" in l][-1]
  proc = _run([f"--config={config_path}", f"--workdir={workdir}",
               "--mode=eval"], tmp_path)
  eval_out = proc.output()
  assert proc.returncode == 0, eval_out[-3000:]
  assert final.strip() in eval_out


def test_summary_mode_and_unknown_method(tmp_path):
  config_path = tmp_path / "toy_config.py"
  config_path.write_text(_CONFIG)
  proc = _run([f"--config={config_path}", "--mode=summary"], tmp_path)
  out = proc.output()
  assert proc.returncode == 0, out[-3000:]
  # Dense(4->8) + BN(8) + Dense(8->2): 40 + 16 + 18 parameters.
  assert "parameters: 74" in out
  # The two matmuls alone are 2 * (4*8 + 8*2) = 96 FLOPs; biases, BN and ReLU
  # add a few dozen more.
  flops = float(out.split("forward FLOPs per image: ")[1].split()[0])
  assert 96 <= flops <= 400
  import run  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown config.method 'nope'"):
    run.make_method(toy.toy_config(method="nope"))


def make_method(config):
  """A method module whose make_method has a bug (config.method =
  "tests.test_run"): run.py must keep the traceback of such errors."""
  raise RuntimeError(f"deliberate bug for {config.method}")


def _run_quick(args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name,parameters", [
    ("wflw_star.py", "13,476,468"),     # the public model's count (98 points).
    ("celeba_mae.py", None),
    ("celeba_sce.py", None),
    ("mtfl_detection.py", None)], ids=lambda v: v if isinstance(v, str) else "")
def test_summary_needs_no_data(name, parameters, tmp_path):
  missing = str(tmp_path / "no_such_dataset")
  proc = _run_quick([f"--config=configs/{name}", "--mode=summary",
                     f"--config.data.root={missing}"])
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "parameters: " in proc.stdout
  assert "forward FLOPs per image: " in proc.stdout
  if parameters:
    assert f"parameters: {parameters}\n" in proc.stdout
  assert not os.path.exists(missing)


def _user_error_cases(tmp_path):
  missing = os.path.join(str(tmp_path), "no_such_dataset")
  work = os.path.join(str(tmp_path), "work")
  return {
      "empty data root": (
          ["--config=configs/wflw_star.py", f"--workdir={work}"],
          "config.data.root is empty"),
      "missing data folder": (
          ["--config=configs/wflw_star.py", f"--workdir={work}",
           f"--config.data.root={missing}"], f"{missing!r} does not exist"),
      "missing celeba folder": (
          ["--config=configs/celeba_sce.py", f"--workdir={work}",
           f"--config.data.root={missing}"], "does not exist"),
      "bad config value": (
          ["--config=configs/default.py", f"--workdir={work}",
           "--config.data.scheme=nope"], "unknown landmark scheme 'nope'"),
      "bad flag value": (
          ["--config=configs/default.py", f"--workdir={work}", "--mode=nope"],
          "unknown --mode 'nope'"),
      "missing checkpoint": (
          ["--config=configs/default.py", f"--workdir={work}", "--mode=eval"],
          "train first"),
      "missing --checkpoint folder": (
          ["--config=configs/default.py", f"--workdir={work}", "--mode=eval",
           f"--checkpoint={missing}"], f"--checkpoint {missing} does not"),
  }


@pytest.mark.parametrize("case", list(_user_error_cases("/tmp")))
def test_user_errors_print_one_line_and_no_traceback(case, tmp_path):
  args, expected = _user_error_cases(tmp_path)[case]
  proc = _run_quick(args)
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and expected in lines[0], proc.stderr[-3000:]
  # Details (an expected layout) may follow, indented under that line.
  after = proc.stderr.split(lines[0], 1)[1].splitlines()
  assert all(not l or l.startswith("  ") for l in after), proc.stderr


def test_config_mismatch_on_resume_is_a_user_error(tmp_path):
  config_path = tmp_path / "toy_config.py"
  config_path.write_text(_CONFIG.replace("num_epochs=30", "num_epochs=1"))
  workdir = str(tmp_path / "run")
  proc = _run_quick([f"--config={config_path}", f"--workdir={workdir}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _run_quick([f"--config={config_path}", f"--workdir={workdir}",
                     "--config.optimizer.learning_rate=0.5"])
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert "optimizer.learning_rate" in proc.stderr


def test_programming_errors_keep_their_traceback(tmp_path):
  config_path = tmp_path / "bug_config.py"
  config_path.write_text(_CONFIG + "\n\ndef get_config():\n"
                         "  c = toy_config()\n"
                         "  c.method = 'tests.test_run'\n"
                         "  return c\n")
  proc = _run_quick([f"--config={config_path}",
                     f"--workdir={tmp_path / 'work'}"])
  assert proc.returncode not in (0, 2), proc.returncode
  assert "Traceback" in proc.stderr
  assert "RuntimeError: deliberate bug for tests.test_run" in proc.stderr
  assert not any(l.startswith("error: ") for l in proc.stderr.splitlines())


_TINY_STAR = """
from configs import default

def get_config():
  c = default.get_config()
  c.data.synthetic.num_train = 8
  c.data.synthetic.num_eval = 4
  c.data.synthetic.image_size = 64
  c.data.crop_size = 32
  c.data.num_workers = 0
  c.model.update(dict(num_stacks=1, depth=1, width=8, conv3x3="xla"))
  c.batch_size = 4
  c.eval_batch_size = 4
  c.num_epochs = 1
  c.checkpoint_every_steps = 0
  c.async_checkpoints = False
  c.compilation_cache_dir = ""
  return c
"""


def _write_yt68_csv(root, split, records):
  """`root/<split>.csv` + `root/images/` in yt68's format (no train.csv)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(root, "images"))
  rows = ["," + ",".join(str(i) for i in range(136))]
  for i, r in enumerate(records):
    name = f"face_{i}.png"
    Image.fromarray(r.load_image()).save(os.path.join(root, "images", name))
    rows.append(name + "," + ",".join(f"{v:.3f}" for v in
                                      r.landmarks.reshape(-1)))
  with open(os.path.join(root, f"{split}.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")


def test_eval_of_another_folder_lists_only_its_split(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from data import synthetic  # pylint: disable=g-import-not-at-top
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  config_path = tmp_path / "tiny_star.py"
  config_path.write_text(_TINY_STAR)
  spec = importlib.util.spec_from_file_location("tiny_star", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  train_dir = str(tmp_path / "train")
  loop.train(star_method.StarMethod(config), config, train_dir)

  folder = str(tmp_path / "frames")      # test.csv + images/, no train.csv.
  faces = synthetic.make_records(6, seed=7, image_size=64)
  _write_yt68_csv(folder, "test", faces)
  assert sorted(os.listdir(folder)) == ["images", "test.csv"]
  eval_dir = str(tmp_path / "eval")
  proc = _run_quick([
      f"--config={config_path}", "--mode=eval", f"--workdir={eval_dir}",
      f"--checkpoint={train_dir}", "--config.data.name=yt68",
      f"--config.data.root={folder}", "--config.data.check_images=exists",
      '--config.data.eval_splits=("test",)',
      "--config.best_metric=test_ema/nme"])
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  with open(os.path.join(eval_dir, "results.json")) as f:
    results = json.load(f)
  flat = json.dumps(results)
  assert "test" in flat and "nme" in flat, flat[:2000]
  # The six faces of the folder were scored (predictions.npz, one row each).
  predictions = np.load(os.path.join(eval_dir, "predictions.npz"))
  assert any(np.shape(predictions[k])[0] == 6 for k in predictions.files), (
      {k: np.shape(predictions[k]) for k in predictions.files})
