r"""Device-mode augmentation at full training length: same accuracy as host mode?

`config.data.augment_on="device"` (data/device_augment.py) moves the flip +
similarity warp + texture augmentation into the jitted train step. Its
statistics equal the host implementation's (tests/test_device_augment.py);
this script checks the consequence that matters: a model trained the whole
budget in device mode scores like the host-mode models of the same config.

Runs compared (yt68, configs/yt68_star.py, the 1,700-step budget of
README "STAR's claims tested on yt68"; raw parameters of the final
evaluation on val):
  * device: `python run.py --config=configs/yt68_star.py --workdir=D
    --config.max_steps=1700 --config.data.augment_on=device`, then the same
    with `--mode=eval`;
  * host: the ambiguity study's clean STAR runs of training seeds 0, 1, 2
    (`star_clean`, `star_clean_seed1`, `star_clean_seed2`; kept in
    bench/predictions/yt68_ambiguity).

Printed: NME (all, jaw, inner; % of the outer-eye-corner distance) of every
run; the host seeds' mean and sample sd; device - host mean in units of that
sd; the paired face bootstrap of device - host seed 0 (faces resampled; it
does not see seed spread, which is why the seed sd is beside it).

  python bench/device_mode_parity.py \
      --device_run bench/predictions/yt68_device_mode/star_device
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from data import ambiguity
from data import schemes as schemes_lib
from star_jax import regression_study
from star_jax import sweep

HERE = os.path.dirname(os.path.abspath(__file__))
HOST_RUNS = ("star_clean", "star_clean_seed1", "star_clean_seed2")
CONFIG = "configs/yt68_star.py"
STEPS = 1700


def compare(device_run, host_dir, gt, host_runs=HOST_RUNS, steps=STEPS,
            samples=sweep.BOOTSTRAP_SAMPLES, seed=sweep.BOOTSTRAP_SEED):
  """{"runs": name -> NMEs (%), "host": mean / sd, "device_minus_host":
  difference of the device NME and the host mean, in % and in host sds,
  "paired": bootstrap of device - first host run}. Raises ValueError when a
  run has no usable final predictions (missing, another step)."""
  gt = np.asarray(gt, np.float64)
  jaw, inner = ambiguity.group_and_rest(
      "jaw", schemes_lib.get_scheme(gt.shape[1]))
  dirs = {"device": device_run}
  dirs.update({n: os.path.join(host_dir, n) for n in host_runs})
  per_face, runs = {}, {}
  for name, run_dir in dirs.items():
    pred, why = sweep.load_final_predictions(run_dir, gt, "val", "raw", steps)
    if pred is None:
      raise ValueError(f"{name} ({run_dir}): {why}")
    per_face[name] = regression_study.face_nmes(pred, gt, jaw, inner)
    runs[name] = {k: 100 * float(np.mean(v))
                  for k, v in per_face[name].items()}
  host = np.array([runs[n]["nme"] for n in host_runs])
  mean = float(host.mean())
  sd = float(host.std(ddof=1)) if len(host) > 1 else None
  diff = runs["device"]["nme"] - mean
  return {
      "runs": runs,
      "host": {"runs": list(host_runs), "mean": mean, "sd": sd},
      "device_minus_host": {"nme": diff,
                            "in_host_sd": None if not sd else diff / sd},
      "paired": {k: sweep.paired_interval(
          per_face["device"][k] - per_face[host_runs[0]][k], samples, seed)
                 for k in regression_study.PARTS},
      "faces": int(gt.shape[0])}


def print_table(res):
  f = sweep.fmt
  rows = [[n, f(r["nme"]), f(r["nme_jaw"]), f(r["nme_inner"])]
          for n, r in res["runs"].items()]
  print("\n".join(sweep.markdown_table(
      ["run (val, %d faces)" % res["faces"], "NME", "NME jaw", "NME inner"],
      rows)))
  h, d = res["host"], res["device_minus_host"]
  print(f"\nhost mode, {len(h['runs'])} seeds: NME {f(h['mean'])} +- "
        f"{f(h['sd'])} (sample sd)")
  print(f"device - host mean: {d['nme']:+.2f} NME points"
        + ("" if d["in_host_sd"] is None else
           f" = {d['in_host_sd']:+.1f} host sds"))
  print(f"paired bootstrap, device - {h['runs'][0]} (faces resampled): "
        + ", ".join(f"{k} {sweep.fmt_interval(res['paired'][k])}"
                    for k in regression_study.PARTS))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--device_run", default=os.path.join(
      HERE, "predictions", "yt68_device_mode", "star_device"))
  p.add_argument("--host_dir", default=os.path.join(
      HERE, "predictions", "yt68_ambiguity"))
  p.add_argument("--steps", type=int, default=STEPS)
  args = p.parse_args()
  gt, _ = sweep.ground_truth(sweep.load_config(CONFIG), "val")
  try:
    res = compare(args.device_run, args.host_dir, gt, steps=args.steps)
  except ValueError as e:
    sys.exit(f"error: {e}")
  print_table(res)


if __name__ == "__main__":
  main()
