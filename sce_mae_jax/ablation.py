r"""SCE-MAE Table 4 on a dataset we have: component-wise matching ablation.

Rows (all at the same resolution, cover-and-stride stride
`inference.stride`, DVE matching protocol of `matching.py`):
  (a) random ViT      - untrained encoder (seed `backbone.seed`), last layer;
  (b) MAE (Baseline)  - the stage-1 encoder's last-layer features;
  (c) MAE + cluster   - (b) with every inattentive token replaced by its
                        CARB centre (layer-3 attention and clustering as in
                        training; no LCR, no projector): `backbone_carb`;
  (d) SCE-MAE         - the stage-2 projector (CARB + LCR), unit-norm
                        features.
Writes `ablation.md` (Markdown table) and `ablation.json` to --out.

  python -m sce_mae_jax.ablation --config=configs/mtfl_matching.py \
      --stage1_workdir=runs/mtfl_pretrain --stage2_workdir=runs/mtfl_sce \
      --out=runs/mtfl_ablation
  (tiny smoke run: --config.matching.num_pairs=16)
Rows whose inputs are missing (no --stage1_workdir: (b), (c); no
--stage2_workdir: (d)) are skipped and listed as such, never filled in.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/mtfl_matching.py", "A stage-2 config (data, backbone).")
_STAGE1 = flags.DEFINE_string("stage1_workdir", "", "Stage-1 (MAE) workdir.")
_STAGE2 = flags.DEFINE_string("stage2_workdir", "", "Stage-2 (CARB+LCR) workdir.")
_OUT = flags.DEFINE_string("out", "runs/ablation", "Output folder.")

ROWS = (("(a) random ViT", "random", "backbone"),
        ("(b) MAE last layer (Baseline)", "stage1", "backbone"),
        ("(c) MAE + clustering", "stage1", "backbone_carb"),
        ("(d) SCE-MAE (cluster + LCR)", "stage2", "projector"))


def run_ablation(config, stage1_workdir: str, stage2_workdir: str,
                 out_dir: str, log=print) -> dict:
  """Evaluates the rows that have their inputs; writes Markdown + JSON."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import detection  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import matching  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import stage2  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  model = stage2.FeatureModel(config)
  records = stage2.list_records(config, config.data.eval_splits[0],
                                eval_set=True)
  arrays = stage2.load_arrays(config, records)
  proj = jax.tree.map(np.asarray, model.init_projector(jax.random.PRNGKey(0)))
  results = {}
  for name, source, kind in ROWS:
    if source == "random":
      cfg = config.copy_and_resolve_references()
      cfg.backbone.checkpoint = ""
      params = {"encoder": stage2.backbone_lib.backbone_params(cfg, model.encoder),
                "projector": proj}
    elif source == "stage1":
      if not stage1_workdir:
        results[name] = {"skipped": "no --stage1_workdir"}
        continue
      cfg = config.copy_and_resolve_references()
      cfg.backbone.checkpoint = stage1_workdir
      params = {"encoder": stage2.backbone_lib.backbone_params(cfg, model.encoder),
                "projector": proj}
    else:
      if not stage2_workdir:
        results[name] = {"skipped": "no --stage2_workdir"}
        continue
      params = detection.load_stage2_params(config, model, stage2_workdir)
    res = matching.evaluate_matching(
        model, params, arrays, kind=kind,
        num_pairs=int(config.matching.num_pairs), seed=int(config.seed),
        warp_kwargs=dict(config.matching.warp))
    log(f"{name}: " + matching.format_result(res))
    results[name] = res
  lines = ["| Method | features | Same | Diff. |", "|---|---|---|---|"]
  for name, _, kind in ROWS:
    r = results[name]
    if "skipped" in r:
      lines.append(f"| {name} | {kind} | skipped ({r['skipped']}) | |")
    else:
      lines.append(f"| {name} | {kind} | {r['same']:.3f} | {r['diff']:.3f} |")
  table = "\n".join(lines)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "ablation.md"), "w") as f:
    f.write("Mean pixel error (70 x 70 frame), "
            f"{config.data.name} {config.data.eval_splits[0]}, "
            f"{config.matching.num_pairs} pairs, stride "
            f"{config.inference.stride}\n\n" + table + "\n")
  with open(os.path.join(out_dir, "ablation.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  log(table)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore.
  run_ablation(_CONFIG.value, _STAGE1.value, _STAGE2.value, _OUT.value)


if __name__ == "__main__":
  app.run(main)
