r"""STAR for coordinate regression on yt68 (our own formulation, not the paper's).

configs/yt68_star.py's data, model, optimiser and schedule with the last
stack's heatmap head replaced by a regression head (star_jax/regression.py):
per landmark a mean in the normalised crop frame and a covariance from
Cholesky parameters. The three losses on that same head (from the repository
root, data in ../shared/data/yt68):

  STAR's decomposition of the predicted covariance + its restriction:
    python run.py --config=configs/yt68_regression.py \
        --workdir=runs/yt68_regression_star
  smooth-L1 on the mean only (the paper's eq. 2 baseline):
    python run.py --config=configs/yt68_regression.py \
        --workdir=runs/yt68_regression_smooth_l1 \
        --config.loss.regression=smooth_l1
  Gaussian negative log-likelihood of the predicted mean and covariance:
    python run.py --config=configs/yt68_regression.py \
        --workdir=runs/yt68_regression_nll --config.loss.regression=nll

The STAR variant reads loss.distance, loss.w, loss.restriction ("value" or
"detach"; "none" is refused: the loss would fall as the covariance grows),
loss.value_form and loss.eigenvalue_clamp as the heatmap loss does.
model.regression_min_std is the smallest standard deviation of the head
(normalised units, a half crop = 1). Evaluation (NME, FR, AUC on "val") is
yt68_star.py's; the prediction is the predicted mean.

The study (the three runs at the 1,700-step budget, beside the heatmap head
trained with STAR and with smooth-L1, table + CED figure):
  python -m star_jax.regression_study --workdir=runs/regression \
      [--heatmap_workdir=runs/ambiguity]
"""

from configs import common


def get_config():
  c = common.yt68_star()
  c.model.head = "regression"         # star_jax/regression.py RegressionHead.
  c.model.regression_min_std = 1e-3
  c.loss.regression = "star"          # star | smooth_l1 | nll
  return c
