r"""Single entry point: train, evaluate or summarise an experiment.

  python run.py --config=configs/wflw_star.py --workdir=/tmp/wflw_star
  python run.py --config=configs/default.py --workdir=/tmp/demo \
      --config.loss.star=False            # the smooth-L1 baseline
  python run.py --config=configs/wflw_star.py --workdir=/tmp/wflw_star \
      --mode=eval --config.eval_checkpoint=best
  python run.py --config=configs/wflw_star.py --mode=summary
  python run.py --config=configs/wflw_star.py --mode=eval \
      --workdir=/tmp/wflw_eval --checkpoint=/tmp/wflw_star   # report only

run.py reads `config.method`, imports the method's module lazily from
`METHODS` and hands over to `training.loop.run_mode`; nothing else happens here.
Re-running the same command in the same workdir resumes from the latest
checkpoint. `--mode=eval --checkpoint=DIR` evaluates the checkpoints of the
training workdir DIR (read only) and writes the report (results.json,
results.md, ced.png for STAR) into --workdir.

A mistake in the command, config or data (`training.errors.UserError`: a
missing data folder, a bad config or flag value, a missing checkpoint, a
config that differs from the checkpoint's) is printed as one `error: ...`
line (details, e.g. the expected data layout, indented below it) and exits
with status 2, without a traceback; any other exception is a bug and keeps
its traceback.
"""

import importlib

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from training import errors

# Method name -> module providing `make_method(config)`; imported on use so a
# method's dependencies are only needed when it runs.
METHODS = {
    "star": "star_jax.method",
    "sce_mae_pretrain": "sce_mae_jax.pretrain",
    "sce_mae_carb": "sce_mae_jax.stage2",
    "sce_mae_detection": "sce_mae_jax.detection",
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and metrics.")
_MODE = flags.DEFINE_string(
    "mode", "train", "train | eval | summary (or a mode the method adds).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None,
    "--mode=eval only: a training workdir whose checkpoints/ (or "
    "checkpoints_best/ with --config.eval_checkpoint=best) are evaluated; it "
    "is only read. Default: --workdir.")


def make_method(config):
  """Imports the module of `config.method` and returns its method object.

  A name from METHODS, or a dotted module path providing `make_method`
  (e.g. a test's toy method).
  """
  name = config.get("method", None)
  if name in METHODS:
    module = importlib.import_module(METHODS[name])
  elif isinstance(name, str) and "." in name:
    module = importlib.import_module(name)
  else:
    raise errors.UserError(
        f"unknown config.method {name!r}; known methods: "
        f"{', '.join(sorted(METHODS))} (or a dotted module path providing "
        "make_method(config))")
  return module.make_method(config)


@errors.reporting_user_errors
def main(argv):
  _main(argv)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every checkpoint step at INFO; keep stdout readable.
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  mode = _MODE.value
  if mode != "summary" and not _WORKDIR.value:
    raise app.UsageError("--workdir is required for --mode=" + mode)
  if _CHECKPOINT.value and mode != "eval":
    raise app.UsageError("--checkpoint is only used by --mode=eval")
  # Imported here so that absl flags are parsed before jax / grain start
  # (grain worker processes re-parse flags).
  from training import loop  # pylint: disable=g-import-not-at-top
  from training import mesh  # pylint: disable=g-import-not-at-top
  mesh.initialize_distributed(config)
  loop.run_mode(mode, make_method(config), config, _WORKDIR.value,
                checkpoint_dir=_CHECKPOINT.value,
                config_path=config_flags.get_config_filename(
                    flags.FLAGS["config"]))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
