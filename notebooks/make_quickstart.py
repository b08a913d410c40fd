r"""Writes notebooks/quickstart.ipynb (nbformat 4.5, without outputs).

  python notebooks/make_quickstart.py           # (re)write the notebook
  python notebooks/make_quickstart.py --check   # exit 1 if it is out of date

The notebook is generated from the cells below so that it is reviewable as
plain Python and cannot drift from this file (tests/test_notebook.py checks
that the committed .ipynb equals `render()` and executes its code cells).

Conventions the test runner relies on: a code line whose first non-blank
character is `!` or `%` is an IPython shell / magic line (installation on
Colab); the CI runner replaces it by `pass`. Everything else is plain Python
that runs both in a Jupyter kernel and in a bare `python` process.
"""

import json
import os
import sys

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "quickstart.ipynb")

# (cell type, source). Sources are dedented Python / Markdown text.
CELLS = [
    ("markdown", r"""
# star-jax quickstart: train, evaluate, predict, draw, export

This notebook walks through what a user of `star-jax` does:

1. install the project,
2. train a small STAR model on the embedded **procedural faces**
   (`data/synthetic/`: rendered on the fly, nothing to download),
3. evaluate it (`run.py --mode=eval`: `results.json`, `results.md`, CED curve),
4. predict landmarks on an image file (`star_jax.predict.Predictor`),
5. draw the figures: the STAR paper's Fig. 3 (heatmap PCA ellipses) and the
   training curves,
6. export a self-contained artifact (`star_jax.export`) and check that it
   predicts exactly what the live model predicts.

`QUICK = True` (below) trains a tiny model for 320 steps (about a minute on 2
CPU cores): enough to beat the mean-shape baseline, not a good landmarker.
`QUICK = False` trains the full embedded default (`configs/default.py`, about
8 minutes on 2 CPU cores; much faster on a Colab GPU).

Everything is written to a temporary folder (or `$STAR_JAX_NOTEBOOK_WORKDIR`),
never into the repository. CI runs this notebook's code cells on CPU
(`tests/test_notebook.py`), so it cannot rot.
"""),
    ("markdown", r"""
## 1. Install

**On Colab**: put the repository at `/content/star-jax` first (upload and
unzip it, or `git clone` your copy there), then run the next two cells.
**Locally**: start Jupyter anywhere inside the repository (or set
`STAR_JAX_REPO=/path/to/star-jax`) after `pip install -r requirements.txt`;
the `!` / `%` line below is then harmless.

On a GPU runtime, also install the matching jax build after the requirements
(README "Install", e.g. `pip install -U "jax[cuda12]==0.10.2"`).
"""),
    ("code", r"""
import os
import sys


def find_repo():
  # The repository root: $STAR_JAX_REPO, a parent of the working directory
  # holding run.py and star_jax/, or /content/star-jax (Colab).
  candidates = [os.environ.get("STAR_JAX_REPO", "")]
  here = os.path.abspath(os.getcwd())
  while True:
    candidates.append(here)
    parent = os.path.dirname(here)
    if parent == here:
      break
    here = parent
  candidates.append("/content/star-jax")
  for c in candidates:
    if c and os.path.isfile(os.path.join(c, "run.py")) and os.path.isdir(
        os.path.join(c, "star_jax")):
      return os.path.abspath(c)
  raise FileNotFoundError(
      "star-jax repository not found: run the notebook inside it, set "
      "STAR_JAX_REPO, or put it at /content/star-jax (Colab)")


REPO = find_repo()
print("repository:", REPO)
"""),
    ("code", r"""
# Colab / a fresh machine only (the CI runner skips lines starting with ! or %).
!pip install -q -r {REPO}/requirements.txt
"""),
    ("code", r"""
import json
import subprocess
import tempfile

import numpy as np
from PIL import Image

if REPO not in sys.path:
  sys.path.insert(0, REPO)

QUICK = True  # False: the full embedded default (about 6 min on 2 CPU cores).

WORK = os.environ.get("STAR_JAX_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(
    prefix="star_jax_notebook_")
os.makedirs(WORK, exist_ok=True)
TRAIN_DIR = os.path.join(WORK, "train")   # checkpoints, metrics.jsonl
EVAL_DIR = os.path.join(WORK, "eval")     # results.json / .md, ced.png
FIG_DIR = os.path.join(WORK, "figures")   # PNG figures of this notebook
os.makedirs(FIG_DIR, exist_ok=True)
print("outputs in:", WORK)

try:  # Inline display in Jupyter / Colab; file paths in a plain process.
  from IPython import get_ipython
  from IPython.display import Image as _IPImage, Markdown as _IPMarkdown
  from IPython.display import display as _display
  INLINE = get_ipython() is not None
except ImportError:
  INLINE = False


def show_image(path):
  if INLINE:
    _display(_IPImage(filename=path))
  else:
    print("figure:", path)


def show_markdown(text):
  if INLINE:
    _display(_IPMarkdown(text))
  else:
    print(text)
"""),
    ("markdown", r"""
## 2. Train a small STAR model on procedural faces

`run.py --config=configs/default.py` is the embedded default: 68-point faces
rendered by `data/synthetic/`, a 2-stack hourglass on 64x64 crops, STAR
loss, Adam + EMA. The quick settings shrink it with `--config.*` overrides:
batches of 16 from 1024 faces, one hourglass stack of width 16 on 32x32 crops
(8x8 heatmaps), a larger learning rate and a shorter EMA, 320 steps (5
epochs), an evaluation on 64 held-out faces every 2 epochs and at the end.
"""),
    ("code", r"""
if QUICK:
  OVERRIDES = {
      "max_steps": 320, "batch_size": 16, "eval_batch_size": 32,
      "data.synthetic.num_train": 1024, "data.synthetic.num_eval": 64,
      "data.synthetic.image_size": 64, "data.crop_size": 32,
      "model.num_stacks": 1, "model.width": 16,
      "optimizer.learning_rate": 3e-3, "ema.half_life_examples": 400.0,
      "eval_every_epochs": 2, "log_every_steps": 10,
      "progress_every_steps": 50, "compilation_cache_dir": "",
  }
else:
  OVERRIDES = {}
FLAGS = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]


def run_py(*args):
  # `python run.py --config=configs/default.py ARGS OVERRIDES`, printed live.
  cmd = [sys.executable, "run.py", "--config=configs/default.py", *args,
         *FLAGS]
  print("$", " ".join(cmd[1:]), flush=True)
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    print(line, end="", flush=True)
  if proc.wait() != 0:
    raise RuntimeError(f"run.py failed (exit {proc.returncode})")


run_py("--mode=train", f"--workdir={TRAIN_DIR}")
"""),
    ("markdown", r"""
## 3. Evaluate

`--mode=eval --checkpoint=TRAIN_DIR` reads the training workdir (only
reads it) and writes the report into `--workdir`: `results.json` (every
number, per face too), `results.md` (the paper's table layout; for this data
set the generic table) and `ced.png` (cumulative error distribution). NME is
normalised by the outer-eye-corner distance (300W), FR / AUC at 10 %.

For scale: the **mean-shape baseline** predicts the average training shape
(in crop coordinates) for every face, ignoring the image.
"""),
    ("code", r"""
run_py("--mode=eval", f"--workdir={EVAL_DIR}", f"--checkpoint={TRAIN_DIR}",
       "--config.eval_checkpoint=best")
with open(os.path.join(EVAL_DIR, "results.md")) as f:
  show_markdown(f.read())
show_image(os.path.join(EVAL_DIR, "ced.png"))

with open(os.path.join(EVAL_DIR, "results.json")) as f:
  RESULTS = json.load(f)
NME = RESULTS["metrics"]["test_ema/nme"]
print(f"checkpoint step {RESULTS['checkpoint']['step']}: "
      f"test_ema/nme = {NME:.6f}")
"""),
    ("code", r"""
from data import synthetic
from data import transforms

with open(os.path.join(TRAIN_DIR, "config.json")) as f:
  CONFIG = json.load(f)  # the resolved training config run.py stored
crop_size = CONFIG["data"]["crop_size"]
margin = CONFIG["data"]["points_margin"]
syn = CONFIG["data"]["synthetic"]


def crop_maps(points):
  # The evaluation crop (crop_mode "points"): image -> crop [2, 3] map.
  center, scale = transforms.center_scale_from_points(points, margin)
  return transforms.crop_matrix(center, scale, crop_size)


train = synthetic.make_records(syn["num_train"], syn["seed"],
                               syn["image_size"])
test = synthetic.make_records(syn["num_eval"], syn["eval_seed"],
                              syn["image_size"])
mean_shape = np.mean([transforms.apply_affine(crop_maps(r.landmarks),
                                              r.landmarks) for r in train], 0)
baseline = []
for r in test:
  guess = transforms.apply_affine(
      transforms.invert_affine(crop_maps(r.landmarks)), mean_shape)
  iod = np.linalg.norm(r.landmarks[36] - r.landmarks[45])
  baseline.append(np.linalg.norm(guess - r.landmarks, axis=-1).mean() / iod)
BASELINE_NME = float(np.mean(baseline))
print(f"mean-shape baseline NME = {BASELINE_NME:.6f}; trained model "
      f"NME = {NME:.6f}")
"""),
    ("markdown", r"""
## 4. Predict on an image file

A new procedural face (a seed used neither for training nor for evaluation),
saved as a JPEG and read back like any photo. `Predictor.from_path` takes a
training workdir (the live model) or an exported artifact; the face box
`(x1, y1, x2, y2)` here is the box of the true points (you would take it from
a face detector). Landmarks come back in pixels of the original image;
`landmarks.plots.landmark_overlay` draws them (green) with the true points
(red). The same from a shell: `python -m star_jax.predict --checkpoint
TRAIN_DIR --image face.jpg --box x1,y1,x2,y2 --out DIR`.
"""),
    ("code", r"""
from landmarks import plots
from star_jax import predict

face, truth = synthetic.render_face(seed=7, index=0, image_size=160)
FACE_JPG = os.path.join(WORK, "face.jpg")
Image.fromarray(face).save(FACE_JPG, quality=95)
image = np.asarray(Image.open(FACE_JPG).convert("RGB"))
box = np.concatenate([truth.min(0), truth.max(0)])

predictor = predict.Predictor.from_path(TRAIN_DIR)
result = predictor.predict([image], boxes=[box])[0]
face_nme = np.linalg.norm(result["landmarks"] - truth, axis=-1).mean() / (
    np.linalg.norm(truth[36] - truth[45]))
print(f"face box {np.round(box, 1).tolist()}, NME on this face = "
      f"{face_nme:.4f}")
plots.landmark_overlay(image, result["landmarks"], gt=truth, box=box,
                       path=os.path.join(FIG_DIR, "overlay.png"))
show_image(os.path.join(FIG_DIR, "overlay.png"))
"""),
    ("markdown", r"""
Optional, when the repository sits next to `shared/data/yt68` (real YouTube
frames, not part of the project): the same call on a real face, with the box
from its annotated points. A model trained a minute on drawn faces is not
expected to do well there.
"""),
    ("code", r"""
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")
if os.path.isfile(os.path.join(YT68, "val.csv")):
  with open(os.path.join(YT68, "val.csv")) as f:
    name, *values = f.read().splitlines()[1].split(",")
  points = np.asarray(values, np.float64).reshape(-1, 2)
  real = np.asarray(Image.open(os.path.join(YT68, "images", name))
                    .convert("RGB"))
  real_box = np.concatenate([points.min(0), points.max(0)])
  real_result = predictor.predict([real], boxes=[real_box])[0]
  plots.landmark_overlay(real, real_result["landmarks"], gt=points,
                         box=real_box,
                         path=os.path.join(FIG_DIR, "overlay_yt68.png"))
  show_image(os.path.join(FIG_DIR, "overlay_yt68.png"))
else:
  print("no yt68 data next to the repository; skipped")
"""),
    ("markdown", r"""
## 5. Figures

**The STAR paper's Fig. 3**: for each landmark, the PCA of its predicted
heatmap as an ellipse (1 standard deviation along each principal direction)
with the major axis in red: the direction STAR loss treats as ambiguous. The
heatmaps come from the live model (`star_jax.inference`) on the crop the
predictor used, for a dozen landmarks. The quick model's heatmaps are 8x8
and broad, so its ellipses are large.

**Training curves**: `train/loss` and the evaluation NME (raw and EMA
parameters) from the workdir's `metrics.jsonl`.
"""),
    ("code", r"""
from star_jax import inference

config, model, variables = inference.load_checkpoint(TRAIN_DIR, "best")
crop = predictor.prepare(image, box=box)["crop"]
out = inference.predict_crops(
    model, variables, crop[None],
    align_corners=config.loss.align_corners, with_heatmaps=True)
heatmaps = np.asarray(out["heatmaps"][0])  # [68, S/4, S/4]
print("heatmaps", heatmaps.shape, "on a", crop.shape, "crop")
# A dozen landmarks (jaw, eye corners, nose tip, mouth corners), as the
# paper's figure shows a few; all 68 overlap on a 32 px crop.
shown = [0, 4, 8, 12, 16, 36, 39, 42, 45, 30, 48, 54]
plots.heatmap_pca_ellipses(crop, heatmaps[shown],
                           align_corners=config.loss.align_corners,
                           path=os.path.join(FIG_DIR, "fig3_pca.png"))
show_image(os.path.join(FIG_DIR, "fig3_pca.png"))

plots.training_curves(TRAIN_DIR, ["train/loss", "test/nme", "test_ema/nme"],
                      path=os.path.join(FIG_DIR, "training_curves.png"))
show_image(os.path.join(FIG_DIR, "training_curves.png"))
"""),
    ("markdown", r"""
## 6. Export

`star_jax.export` writes ONE zip file: the `jax.export`-serialized inference
function (symbolic batch size; uint8 crops -> landmarks), its parameters and
the training config. `export.load` needs only jax and numpy (no flax, no model
code). Shell: `python -m star_jax.export --checkpoint TRAIN_DIR --out
model.zip`. The loaded artifact must predict what the live model predicts:
we run it on the predictor's crop and compare, then use the artifact itself as
a `Predictor`.
"""),
    ("code", r"""
from star_jax import export

ARTIFACT = os.path.join(WORK, "star_quickstart.zip")
# Lowered for cpu, cuda and tpu (the default), whatever machine this is.
manifest = export.export_checkpoint(TRAIN_DIR, ARTIFACT, which="best")
print(f"{ARTIFACT}: {os.path.getsize(ARTIFACT) / 1e6:.2f} MB, crop "
      f"{manifest['crop_size']}, {manifest['num_points']} points, platforms "
      f"{manifest['platforms']}, from {manifest['source']['path']}")

landmarker = export.load(ARTIFACT)
prep = predictor.prepare(image, box=box)
exported = landmarker(prep["crop"][None], prep["crop_to_image"][None])
EXPORT_MAX_DIFF = float(np.abs(exported["landmarks"][0]
                               - result["landmarks"]).max())
print(f"artifact vs live Predictor: max |difference| = {EXPORT_MAX_DIFF:.2e} "
      "pixels")
assert EXPORT_MAX_DIFF < 1e-3, EXPORT_MAX_DIFF

from_artifact = predict.Predictor.from_path(ARTIFACT).predict(
    [image], boxes=[box])[0]
np.testing.assert_allclose(from_artifact["landmarks"], result["landmarks"],
                           atol=1e-3)
print("Predictor.from_path(artifact) gives the same landmarks")
"""),
    ("code", r"""
SUMMARY = {"nme": NME, "baseline_nme": BASELINE_NME, "face_nme": face_nme,
           "export_max_diff": EXPORT_MAX_DIFF,
           "checkpoint_step": RESULTS["checkpoint"]["step"],
           "figures": sorted(os.listdir(FIG_DIR)), "work": WORK}
with open(os.path.join(WORK, "summary.json"), "w") as f:
  json.dump(SUMMARY, f, indent=1)
print(json.dumps(SUMMARY, indent=1))
"""),
]


def _lines(text: str):
  """Notebook JSON stores a cell's source as a list of lines with newlines."""
  lines = text.strip("\n").split("\n")
  return [l + "\n" for l in lines[:-1]] + [lines[-1]]


def render() -> str:
  """The notebook as the exact text written to quickstart.ipynb."""
  cells = []
  for i, (kind, text) in enumerate(CELLS):
    cell = {"cell_type": kind, "id": f"cell-{i:02d}", "metadata": {},
            "source": _lines(text)}
    if kind == "code":
      cell["execution_count"] = None
      cell["outputs"] = []
    cells.append(cell)
  notebook = {
      "cells": cells,
      "metadata": {
          "colab": {"name": "quickstart.ipynb", "provenance": []},
          "kernelspec": {"display_name": "Python 3", "language": "python",
                         "name": "python3"},
          "language_info": {"name": "python"},
      },
      "nbformat": 4,
      "nbformat_minor": 5,
  }
  return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv) -> int:
  text = render()
  if "--check" in argv[1:]:
    try:
      with open(NOTEBOOK, encoding="utf-8") as f:
        same = f.read() == text
    except FileNotFoundError:
      same = False
    if not same:
      print(f"{NOTEBOOK} is out of date: run python "
            "notebooks/make_quickstart.py", file=sys.stderr)
      return 1
    return 0
  with open(NOTEBOOK, "w", encoding="utf-8") as f:
    f.write(text)
  print(f"wrote {NOTEBOOK}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
