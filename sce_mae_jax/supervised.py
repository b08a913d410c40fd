"""The supervised reference for detection: a small CNN trained with labels.

Self-supervised detection numbers mean little on their own; beside the
trivial references (mean shape, random ViT) a reader needs to see what the
same faces give when the features themselves are learnt from the landmarks.
This module trains, end to end with the labels, a small CNN feature
extractor followed by the SAME regressor head as the frozen-feature rows
(`keypoint_head`), on the same training crops (the label-free fixed crops),
and scores it on the same val faces.

Model (`SupervisedDetector`): `SmallCNN` (5x5 stride-2 conv, then 3x3
convs, stride 2 once more, GroupNorm + ReLU: a `[B, S/4, S/4, width]` map,
24 x 24 at 96 px, the grid of the stride-4 dense ViT features) -> the head.
Training (`train_supervised`): Adam with cosine decay and decoupled weight
decay, horizontal flips with the scheme's point permutation, the head's
smooth-L1 loss on normalised coordinates; all in one jitted step.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from landmarks import coordinates
from sce_mae_jax import keypoint_head


class SmallCNN(nn.Module):
  """`[B, S, S, 3]` uint8 -> `[B, S/4, S/4, widths[-1]]` features.

  Attributes:
    widths: channels of the stride-2 5x5 stem, the stride-2 3x3 conv and
      each further 3x3 conv at S/4.
  """
  widths: Sequence[int] = (32, 64, 64, 64)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.astype(jnp.float32) / 127.5 - 1.0
    for i, (width, kernel, stride) in enumerate(self._layers()):
      x = nn.Conv(width, (kernel, kernel), strides=(stride, stride),
                  padding="SAME", name=f"conv{i}")(x)
      x = nn.GroupNorm(num_groups=min(8, width), name=f"norm{i}")(x)
      x = nn.relu(x)
    return x

  def _layers(self):
    w = tuple(self.widths)
    if len(w) < 2:
      raise ValueError(f"SmallCNN needs >= 2 widths, got {w}.")
    return [(w[0], 5, 2), (w[1], 3, 2)] + [(c, 3, 1) for c in w[2:]]


class SupervisedDetector(nn.Module):
  """`SmallCNN` followed by a `keypoint_head` regressor."""
  head: nn.Module
  widths: Sequence[int] = (32, 64, 64, 64)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    return self.head(SmallCNN(self.widths, name="cnn")(images))


def flip_batch(images: np.ndarray, landmarks: np.ndarray, flip: np.ndarray,
               scheme):
  """Mirrors the faces where `flip` is True (`scheme.flip_landmarks`: x
  mirrored about the pixel centres, left / right points swapped)."""
  images = images.copy()
  landmarks = np.asarray(landmarks, np.float32).copy()
  images[flip] = images[flip][:, :, ::-1]
  landmarks[flip] = scheme.flip_landmarks(landmarks[flip], images.shape[2])
  return images, landmarks


def train_supervised(model: SupervisedDetector, train: Dict[str, np.ndarray],
                     *, epochs: int, scheme,
                     batch_size: int = 32, learning_rate: float = 1e-3,
                     weight_decay: float = 1e-4, seed: int = 0,
                     evaluate: Optional[Callable[[dict], float]] = None,
                     log=print) -> dict:
  """Trains `model` on `train` (`image` uint8 `[n, S, S, 3]`, `landmarks`
  crop px `[n, K, 2]`) for `epochs` full passes (the last partial batch is
  dropped each epoch); flips with probability 0.5 (`scheme`: the
  `data.schemes.LandmarkScheme` of the points).

  Args:
    evaluate: optional `params -> val NME`, called after every epoch (the
      curve goes in the returned history).

  Returns:
    `{"params", "history": [{"epoch", "train_loss", "val_nme"?}], "seconds"}`.
  """
  images, landmarks = train["image"], np.asarray(train["landmarks"],
                                                 np.float32)
  n, size = images.shape[0], images.shape[1]
  steps_per_epoch = n // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"{n} training faces are fewer than one batch of "
                     f"{batch_size}.")
  total = steps_per_epoch * int(epochs)
  schedule = optax.cosine_decay_schedule(learning_rate, total)
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  rng = np.random.default_rng(seed)
  params = model.init(jax.random.PRNGKey(seed),
                      jnp.asarray(images[:1]))["params"]
  # Start at the mean training shape, as the frozen-feature heads do.
  start = jnp.mean(model.apply({"params": params},
                               jnp.asarray(images[:256])), axis=0)
  mean = coordinates.normalise_landmarks(np.mean(landmarks, axis=0), size)
  params = keypoint_head.set_offset(params, jnp.asarray(mean) - start)
  opt = tx.init(params)

  def loss_of(p, x, y):
    pred = model.apply({"params": p}, x)
    return keypoint_head.regression_loss(
        pred, coordinates.normalise_landmarks(y, size))

  @jax.jit
  def step(p, o, x, y):
    loss, g = jax.value_and_grad(loss_of)(p, x, y)
    up, o = tx.update(g, o, p)
    return optax.apply_updates(p, up), o, loss

  history, t0 = [], time.time()
  for epoch in range(int(epochs)):
    order = rng.permutation(n)
    losses = []
    for b in range(steps_per_epoch):
      idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
      x, y = flip_batch(images[idx], landmarks[idx],
                        rng.random(idx.size) < 0.5, scheme)
      params, opt, loss = step(params, opt, jnp.asarray(x), jnp.asarray(y))
      losses.append(loss)
    entry = {"epoch": epoch + 1,
             "train_loss": float(np.mean(jax.device_get(losses)))}
    if evaluate is not None:
      entry["val_nme"] = float(evaluate(params))
    history.append(entry)
    log(f"supervised epoch {epoch + 1}/{epochs}: " +
        ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "epoch") +
        f" [{time.time() - t0:.0f} s]")
  return {"params": params, "history": history,
          "seconds": time.time() - t0}


def predict(model: SupervisedDetector, params, images: np.ndarray,
            batch_size: int = 128) -> np.ndarray:
  """`[n, K, 2]` crop-pixel predictions."""
  size = images.shape[1]
  fn = jax.jit(lambda x: coordinates.denormalise_landmarks(
      model.apply({"params": params}, x), size))
  return np.concatenate([np.asarray(fn(jnp.asarray(images[i:i + batch_size])))
                         for i in range(0, images.shape[0], batch_size)])
