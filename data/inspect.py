r"""Checks a dataset and draws a contact sheet of training crops.

  python -m data.inspect --dataset yt68 --root ../shared/data/yt68 \
      --split val --out /tmp/inspect_yt68

Prints the record count, every problem the reader met (file and line), the
landmark-count / visibility / crop statistics, and writes
`<out>/<dataset>_<split>_sheet.png`: `--num` augmented crops (the STAR
training augmentation, seed `--seed`) in a grid, landmarks drawn as dots
coloured by edge group (white: on no edge; red outline: not visible), and a
red frame around any sample whose image could not be decoded.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from data import pipeline
from data import schemes as schemes_lib
from data import transforms

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "reader name (data.readers.NAMES)")
flags.DEFINE_string("root", None, "dataset folder")
flags.DEFINE_string("split", "val", "split to list")
flags.DEFINE_string("out", None, "output folder for the contact sheet")
flags.DEFINE_integer("num", 16, "crops on the sheet")
flags.DEFINE_integer("crop_size", 256, "crop size S")
flags.DEFINE_integer("seed", 0, "augmentation seed")
flags.DEFINE_bool("augment", True, "draw augmented (training) crops")
flags.DEFINE_string("crop_mode", "auto", "auto | center_scale | box | points")
flags.DEFINE_string("check_images", "exists",
                    "reader image check: none | exists | verify | decode")

_PALETTE = [(255, 64, 64), (255, 160, 0), (255, 255, 0), (64, 255, 64),
            (0, 224, 224), (64, 128, 255), (160, 96, 255), (255, 96, 224),
            (192, 192, 192)]


def point_colours(scheme: schemes_lib.LandmarkScheme):
  """RGB per point: its (first) edge's palette colour, white if on none."""
  colours = [(255, 255, 255)] * scheme.num_points
  for e, idx in enumerate(scheme.edges):
    for i in idx:
      if colours[i] == (255, 255, 255):
        colours[i] = _PALETTE[e % len(_PALETTE)]
  return colours


def draw_sample(image: np.ndarray, landmarks: np.ndarray, visible: np.ndarray,
                scheme: schemes_lib.LandmarkScheme, failed: bool = False):
  """PIL image of one crop with its landmarks."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  im = Image.fromarray(np.asarray(image, np.uint8))
  draw = ImageDraw.Draw(im)
  r = max(1.0, image.shape[0] / 128.0)
  for (x, y), vis, c in zip(landmarks, visible, point_colours(scheme)):
    box = (x - r, y - r, x + r, y + r)
    draw.ellipse(box, fill=c, outline=None if vis else (255, 0, 0))
  if failed:
    draw.rectangle((0, 0, im.width - 1, im.height - 1), outline=(255, 0, 0),
                   width=3)
  return im


def contact_sheet(batch, scheme, columns: Optional[int] = None):
  """Grid of drawn samples from a pipeline batch (valid samples only)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  keep = np.nonzero(batch["valid"] | batch["decode_failed"])[0]
  tiles = [draw_sample(batch["image"][i], batch["landmarks"][i],
                       batch["visible"][i], scheme,
                       bool(batch["decode_failed"][i])) for i in keep]
  if not tiles:
    raise ValueError("no samples to draw")
  cols = columns or int(math.ceil(math.sqrt(len(tiles))))
  rows = int(math.ceil(len(tiles) / cols))
  s = tiles[0].width
  sheet = Image.new("RGB", (cols * s, rows * s))
  for k, t in enumerate(tiles):
    sheet.paste(t, ((k % cols) * s, (k // cols) * s))
  return sheet


def describe(listing, crop_mode: str) -> str:
  """Counts and statistics of a listing (one line each)."""
  recs = list(listing)
  lines = [f"records: {len(recs)}"]
  if not recs:
    return "\n".join(lines)
  counts = sorted({r.num_points for r in recs})
  lines.append(f"landmarks per face: {counts}")
  vis = [np.mean(r.visible) for r in recs if r.visible is not None]
  if vis:
    lines.append(f"visible share: mean {np.mean(vis):.3f}, min {np.min(vis):.3f}")
  lines.append("have center/scale: %d, box: %d" % (
      sum(r.center is not None for r in recs), sum(r.box is not None for r in recs)))
  scales = []
  for r in recs:
    try:
      scales.append(transforms.record_center_scale(r, crop_mode)[1])
    except ValueError as e:
      lines.append(f"  cannot crop {r.image_path}: {e}")
  if scales:
    lines.append(f"crop scale ({crop_mode}): median {np.median(scales):.3f}, "
                 f"min {np.min(scales):.3f}, max {np.max(scales):.3f}")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  del argv
  for name in ("dataset", "root", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  from data import readers  # pylint: disable=g-import-not-at-top
  listing = readers.read_dataset(FLAGS.dataset, FLAGS.root, FLAGS.split,
                                 check_images=FLAGS.check_images)
  problems = list(getattr(listing, "problems", []))
  print(f"{FLAGS.dataset} [{FLAGS.split}] at {FLAGS.root}")
  print(describe(listing, FLAGS.crop_mode))
  print(f"problems: {len(problems)}")
  for p in problems:
    print(f"  {p}")
  recs = list(listing)
  if not recs:
    print("nothing to draw")
    return
  scheme = schemes_lib.get_scheme(recs[0].num_points)
  num = min(FLAGS.num, len(recs))
  loader = pipeline.make_landmark_loader(
      recs, crop_size=FLAGS.crop_size, scheme=scheme, train=FLAGS.augment,
      batch_size=num, seed=FLAGS.seed, crop_mode=FLAGS.crop_mode,
      shard_index=0, shard_count=1)
  batch = next(iter(loader))
  failed = int(batch["decode_failed"].sum())
  print(f"sheet: {num} {'augmented ' if FLAGS.augment else ''}crops at "
        f"{FLAGS.crop_size} px; undecodable images in it: {failed}")
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, f"{FLAGS.dataset}_{FLAGS.split}_sheet.png")
  contact_sheet(batch, scheme).save(path)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
