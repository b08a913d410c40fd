r"""STAR on yt68 with controlled label ambiguity on the training labels.

configs/yt68_star.py's experiment (same data, model, loss, schedule) plus
`data.label_noise`: the training labels of the chosen curves are moved along
(`direction="tangent"`) or across (`"normal"`) the curve by
N(0, (sigma * IOD)^2), IOD = outer eye corners 36 / 45; evaluation labels are
never changed (data/ambiguity.py). sigma 0 (the default) is the plain
yt68_star run. The draws depend only on `label_noise.seed` and the faces, so
a STAR run and a smooth-L1 run (`--config.loss.star=False`) train on the same
noisy labels.

The study (STAR vs smooth-L1 x {no noise; tangent 0.05, 0.1; normal 0.05,
0.1} on the jaw, plus training seeds 1, 2 at sigma 0; trains each missing
run, then `--mode=eval` for its predictions, then the analysis):
  python -m star_jax.ambiguity_study --workdir=runs/ambiguity --steps=1700 \
      --parallel=2
  python -m star_jax.ambiguity_study --workdir=runs/ambiguity --analyse_only

One run by hand:
  python run.py --config=configs/yt68_ambiguity.py --workdir=runs/amb_t05 \
      --config.max_steps=1700 --config.data.label_noise.sigma=0.05 \
      --config.data.label_noise.direction=tangent
  python run.py --config=configs/yt68_ambiguity.py --workdir=runs/amb_t05 \
      --config.max_steps=1700 --config.data.label_noise.sigma=0.05 \
      --config.data.label_noise.direction=tangent --mode=eval

Label-noise fields (data/ambiguity.py LabelNoise):
  groups     curves whose points move: "jaw" (0-16), "brows" (17-21, 22-26),
             "nose_bridge" (27-30); e.g. '("jaw", "brows")'.
  sigma      displacement std in units of the inter-ocular distance; 0 = off.
  direction  "tangent" or "normal".
  seed       noise seed, independent of the training seed `seed`.

The other fields and their reasons: configs/yt68_star.py (kept equal to it,
tests/test_ambiguity_study.py checks that).
"""

import ml_collections

from configs import common


def get_config():
  c = common.yt68_star()
  # Training-label ambiguity (data/ambiguity.py); sigma 0 = off.
  c.data.label_noise = ml_collections.ConfigDict(dict(
      groups=("jaw",), sigma=0.0, direction="tangent", seed=0))
  return c
