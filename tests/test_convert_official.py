"""Tests for star_jax.convert_official (public STAR checkpoints -> ours).

The public weights cannot be downloaded here, so the test writes its own
PyTorch version of the public StackedHGNetV1 (ZhenglinZhou/STAR,
lib/backbone/stackedHGNetV1.py and ADNet's coord_conv.py) with the public
module and parameter names, its CoordConv grid construction, its unused skip
convolutions, BGR input, (x / 255) * 2 - 1 normalisation and decoder; fills it
with random weights and BatchNorm statistics, saves it as the public code does
(`torch.save({"net": state_dict, ...})`), converts, and compares every stack's
outputs and the decoded landmarks with our model.
"""

import argparse
import functools
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # pylint: disable=g-import-not-at-top
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

from star_jax import convert_official  # pylint: disable=g-import-not-at-top
from landmarks import distribution  # pylint: disable=g-import-not-at-top
from star_jax import method as method_lib  # pylint: disable=g-import-not-at-top

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO_ROOT, "..", "shared", "data")

# The public 300W edge groups (conf/alignment.py), as point-index ranges.
EDGES_300W = [tuple(range(a, b)) for a, b in
              ((0, 17), (17, 22), (22, 27), (27, 31), (31, 36), (36, 42),
               (42, 48), (48, 60), (60, 68))]

# A small but complete public configuration: the public code builds the
# hourglass CoordConv grid as image_size / nstack, which equals the feature
# size only for 4 stacks, so we keep 4 stacks and shrink image, depth, width.
SMALL = dict(num_points=68, edges=EDGES_300W, nstack=4, nlevels=2,
             in_channel=32, image_size=64)


# ---------------------------------------------- the public architecture ----

class ConvBlock(nn.Module):
  """conv (bias) [+ bn] [+ relu]; submodules named conv, bn."""

  def __init__(self, c_in, c_out, k, stride=1, bn=False, relu=True):
    super().__init__()
    self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=(k - 1) // 2)
    self.bn = nn.BatchNorm2d(c_out) if bn else None
    self.use_relu = relu

  def forward(self, x):
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    return F.relu(x) if self.use_relu else x


class ResBlock(nn.Module):
  """Pre-activation bottleneck; skip_layer always built, used iff c_in != c_out."""

  def __init__(self, c_in, c_out):
    super().__init__()
    mid = c_out // 2
    self.bn1 = nn.BatchNorm2d(c_in)
    self.conv1 = ConvBlock(c_in, mid, 1, relu=False)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv2 = ConvBlock(mid, mid, 3, relu=False)
    self.bn3 = nn.BatchNorm2d(mid)
    self.conv3 = ConvBlock(mid, c_out, 1, relu=False)
    self.skip_layer = ConvBlock(c_in, c_out, 1, relu=False)
    self.need_skip = c_in != c_out

  def forward(self, x):
    residual = self.skip_layer(x) if self.need_skip else x
    y = self.conv1(F.relu(self.bn1(x)))
    y = self.conv2(F.relu(self.bn2(y)))
    y = self.conv3(F.relu(self.bn3(y)))
    return y + residual


class CoordConv(nn.Module):
  """ADNet's CoordConvTh with radius: [x, xx, yy, rr (, xx_b, yy_b)] -> conv."""

  def __init__(self, x_dim, y_dim, c_in, c_out, k, stride, boundary,
               first_one, bn, relu):
    super().__init__()
    self.x_dim, self.y_dim = x_dim, y_dim
    self.boundary = boundary
    extra = 3 + (2 if boundary and not first_one else 0)
    self.conv = nn.Conv2d(c_in + extra, c_out, k, stride, padding=(k - 1) // 2)
    self.bn = nn.BatchNorm2d(c_out) if bn else None
    self.use_relu = relu

  def forward(self, x, heatmap=None):
    b = x.shape[0]
    # As the public AddCoordsTh: "xx" counts along dim 2 (x_dim), "yy" along
    # dim 3 (y_dim), both scaled by 1 / (dim - 1) to [-1, 1].
    xx = torch.arange(self.x_dim, dtype=torch.float32) / (self.x_dim - 1)
    yy = torch.arange(self.y_dim, dtype=torch.float32) / (self.y_dim - 1)
    xx = (xx * 2 - 1)[:, None].expand(self.x_dim, self.y_dim)
    yy = (yy * 2 - 1)[None, :].expand(self.x_dim, self.y_dim)
    xx = xx[None, None].repeat(b, 1, 1, 1)
    yy = yy[None, None].repeat(b, 1, 1, 1)
    rr = torch.sqrt(xx**2 + yy**2)
    parts = [x, xx, yy, rr / torch.max(rr)]
    if self.boundary and heatmap is not None:
      last = torch.clamp(heatmap[:, -1:], 0.0, 1.0)
      parts += [torch.where(last > 0.05, xx, torch.zeros_like(xx)),
                torch.where(last > 0.05, yy, torch.zeros_like(yy))]
    y = self.conv(torch.cat(parts, 1))
    if self.bn is not None:
      y = self.bn(y)
    return F.relu(y) if self.use_relu else y


class Hourglass(nn.Module):

  def __init__(self, n, f, add_coord=False, first_one=False, x_dim=64,
               y_dim=64):
    super().__init__()
    self.coordconv = (CoordConv(x_dim, y_dim, f, f, 1, 1, True, first_one,
                                False, False) if add_coord else None)
    self.up1 = ResBlock(f, f)
    self.low1 = ResBlock(f, f)
    self.low2 = Hourglass(n - 1, f) if n > 1 else ResBlock(f, f)
    self.low3 = ResBlock(f, f)

  def forward(self, x, heatmap=None):
    if self.coordconv is not None:
      x = self.coordconv(x, heatmap)
    low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2, 2))))
    return self.up1(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class E2HTransform(nn.Module):
  """Fixed buffers: weight [N, E, 1, 1] (point on edge), bias [N] (on none)."""

  def __init__(self, edges, num_points):
    super().__init__()
    m = torch.zeros(num_points, len(edges))
    for e, idx in enumerate(edges):
      m[list(idx), e] = 1.0
    self.register_buffer("weight", m[:, :, None, None])
    self.register_buffer("bias", (m.sum(1) < 0.5).float())

  def forward(self, edgemaps):
    return F.conv2d(edgemaps, self.weight, self.bias)


def decode(heatmap):
  """The public default decoder: soft-argmax on arange / (n - 1) * 2 - 1."""
  _, _, h, w = heatmap.shape
  ys = (torch.arange(h, dtype=torch.float32) / (h - 1) * 2 - 1)[:, None]
  xs = (torch.arange(w, dtype=torch.float32) / (w - 1) * 2 - 1)[None, :]
  total = torch.clamp(heatmap.sum([2, 3]), min=1e-6)
  return torch.stack([(xs * heatmap).sum([2, 3]) / total,
                      (ys * heatmap).sum([2, 3]) / total], -1)


class StackedHGNetV1(nn.Module):
  """The public network with AAM; forward returns per-stack maps + landmarks."""

  def __init__(self, num_points, edges, nstack=4, nlevels=4, in_channel=256,
               image_size=256):
    super().__init__()
    self.nstack = nstack
    n, e, c = num_points, len(edges), in_channel
    self.pre = nn.Sequential(
        CoordConv(image_size, image_size, 3, 64, 7, 2, False, False, True,
                  True),
        ResBlock(64, 128), nn.MaxPool2d(2, 2), ResBlock(128, 128),
        ResBlock(128, c))
    grid = int(image_size / nstack)
    self.hgs = nn.ModuleList([
        Hourglass(nlevels, c, add_coord=True, first_one=(i == 0), x_dim=grid,
                  y_dim=grid) for i in range(nstack)])
    self.features = nn.ModuleList([
        nn.Sequential(ResBlock(c, c), ConvBlock(c, c, 1, bn=True, relu=True))
        for _ in range(nstack)])
    head = lambda a, b, k: nn.ModuleList(  # pylint: disable=g-long-lambda
        [ConvBlock(a, b, 1, relu=False) for _ in range(k)])
    self.out_heatmaps = head(c, n, nstack)
    self.e2h_transform = E2HTransform(edges, n)
    self.out_edgemaps = head(c, e, nstack)
    self.out_pointmaps = head(c, n, nstack)
    self.merge_edgemaps = head(e, c, nstack - 1)
    self.merge_pointmaps = head(n, c, nstack - 1)
    self.merge_features = head(c, c, nstack - 1)
    self.merge_heatmaps = head(n, c, nstack - 1)

  def forward(self, x):
    x = self.pre(x)
    heatmaps, outputs = None, []
    for i in range(self.nstack):
      feature = self.features[i](self.hgs[i](x, heatmap=heatmaps))
      heatmaps = F.relu(F.instance_norm(self.out_heatmaps[i](feature)))
      pointmaps = torch.sigmoid(self.out_pointmaps[i](feature))
      edgemaps = torch.sigmoid(self.out_edgemaps[i](feature))
      fused = self.e2h_transform(edgemaps) * pointmaps * heatmaps
      if i < self.nstack - 1:
        x = (x + self.merge_features[i](feature)
             + self.merge_heatmaps[i](heatmaps)
             + self.merge_pointmaps[i](pointmaps)
             + self.merge_edgemaps[i](edgemaps))
      outputs.append({"heatmaps": fused, "pointmaps": pointmaps,
                      "edgemaps": edgemaps, "landmarks": decode(fused)})
    return outputs


def random_official_net(seed=0, **kw):
  """Eval-mode public network with random weights and BatchNorm statistics."""
  torch.manual_seed(seed)
  net = StackedHGNetV1(**kw)
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        c = module.num_features
        module.weight.copy_(0.5 + torch.rand(c, generator=g))
        module.bias.copy_(0.4 * torch.rand(c, generator=g) - 0.2)
        module.running_mean.copy_(0.4 * torch.rand(c, generator=g) - 0.2)
        module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
        module.num_batches_tracked.fill_(1234)
  return net.eval()


def numpy_state_dict(net):
  return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def sample_images(size, batch=3):
  """RGB uint8 crops: a real yt68 face when the shared data is there, noise."""
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (batch, size, size, 3)).astype(np.uint8)
  csv = os.path.join(DATA, "yt68", "val.csv")
  if os.path.isfile(csv):  # The first val face, cropped around its points.
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with open(csv) as f:
      row = f.readlines()[1].strip().split(",")
    points = np.array(row[1:], np.float64).reshape(-1, 2)
    centre = (points.min(0) + points.max(0)) / 2
    half = 0.625 * (points.max(0) - points.min(0)).max()
    box = tuple(np.round(np.concatenate([centre - half, centre + half])))
    with Image.open(os.path.join(DATA, "yt68", "images", row[0])) as im:
      images[0] = np.asarray(im.convert("RGB").crop(box).resize((size, size)))
  return images


def official_forward(net, rgb_images):
  """The public preprocessing: BGR (cv2), NCHW, x / 255 * 2 - 1."""
  bgr = torch.from_numpy(np.ascontiguousarray(rgb_images[..., ::-1]))
  x = bgr.float().permute(0, 3, 1, 2) / 255.0 * 2.0 - 1.0
  with torch.no_grad():
    return [{k: v.numpy() for k, v in out.items()} for out in net(x)]


@functools.partial(jax.jit, static_argnums=0)
def apply_ours(net, variables, images):
  return net.apply(variables, images, train=False)


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
  net = random_official_net(**SMALL)
  path = str(tmp_path_factory.mktemp("official") / "star_small.pkl")
  torch.save({"net": net.state_dict(), "epoch": 499,
              "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}},
             path)
  images = sample_images(SMALL["image_size"])
  return net, path, images, official_forward(net, images)


# ----------------------------------------------------------------- tests ----

def test_converted_model_equals_public_network(small_case):
  net, path, images, theirs = small_case
  state_dict, info = convert_official.load_official_state_dict(path)
  assert info["epoch"] == 499
  arch = convert_official.infer_architecture(state_dict)
  assert (arch.num_points, arch.num_edges, arch.num_stacks, arch.depth,
          arch.width, arch.use_aam) == (68, 9, 4, 2, 32, True)
  variables = convert_official.convert_state_dict(state_dict, 68)
  ours_net = convert_official.official_model(arch)
  assert ours_net.input_bgr
  ours = apply_ours(ours_net, variables, images)

  assert len(ours) == len(theirs) == 4
  s = SMALL["image_size"]
  for i, (o, t) in enumerate(zip(ours, theirs)):
    for key in ("heatmaps", "pointmaps", "edgemaps"):
      np.testing.assert_allclose(np.asarray(o[key]), t[key], rtol=0,
                                 atol=1e-4, err_msg=f"stack {i} {key}")
    coords = np.asarray(distribution.soft_argmax(o["heatmaps"]))
    np.testing.assert_allclose(coords, t["landmarks"], rtol=0, atol=1e-4,
                               err_msg=f"stack {i} landmarks")
  # Pixels as our eval decodes them vs the public demo's denorm_points
  # (align_corners=False); 1e-4 on the [-1, 1] scale is 1e-4 * S / 2 px.
  eye = np.tile(np.eye(2, 3, dtype=np.float32), (len(images), 1, 1))
  crop_px, original_px = method_lib.decode_predictions(ours, eye, s)
  their_px = ((theirs[-1]["landmarks"] + 1.0) * s - 1.0) / 2.0
  np.testing.assert_allclose(np.asarray(crop_px), their_px, rtol=0,
                             atol=1e-4 * s / 2)
  np.testing.assert_allclose(np.asarray(original_px), their_px, rtol=0,
                             atol=1e-4 * s / 2)
  # The boundary channels were active (the last heatmap crosses 0.05).
  assert (theirs[0]["heatmaps"][:, -1] > 0.05).any()

  # The comparison can fail: RGB fed where BGR is expected, or the two
  # coordinate channels of the stem CoordConv swapped, change the outputs.
  as_rgb = apply_ours(ours_net, variables, images[..., ::-1])
  assert np.abs(np.asarray(as_rgb[-1]["heatmaps"]) -
                theirs[-1]["heatmaps"]).max() > 1e-2
  swapped = jax.tree.map(np.copy, variables)
  kernel = swapped["params"]["stem"]["coord_conv"]["kernel"]
  kernel[:, :, [3, 4]] = kernel[:, :, [4, 3]]
  out = apply_ours(ours_net, swapped, images)
  assert np.abs(np.asarray(out[-1]["heatmaps"]) -
                theirs[-1]["heatmaps"]).max() > 1e-3


def test_command_writes_a_restorable_training_checkpoint(tmp_path, capsys):
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  from training import loop as loop_lib  # pylint: disable=g-import-not-at-top
  # Depth 1, width 16: fewer arrays for orbax to write on a busy CPU.
  net = random_official_net(seed=3, **dict(SMALL, nlevels=1, in_channel=16))
  path = str(tmp_path / "tiny.pkl")
  torch.save({"net": net.state_dict(), "epoch": 7}, path)
  out = str(tmp_path / "converted")
  assert convert_official.main(["--pkl", path, "--out", out,
                                "--crop_size", "64"]) == 0
  assert "--config.model.input_bgr=True" in capsys.readouterr().out
  with open(os.path.join(out, "config.json")) as f:
    saved = json.load(f)
  assert saved["model"] == {
      "num_stacks": 4, "depth": 1, "width": 16, "use_aam": True,
      "heatmap_activation": "instance_norm_relu", "dtype": "float32",
      "input_bgr": True, "conv3x3": "auto", "remat": False}
  assert saved["data"]["scheme"] == "300w" and saved["data"]["crop_size"] == 64

  # Restore as `run.py --mode=eval` does: the Trainer's abstract state from
  # the saved config, latest and best.
  config = convert_official.official_config(
      convert_official.infer_architecture(
          convert_official.load_official_state_dict(path)[0]), 64)
  config.batch_size = 2

  class NoData:
    def num_train_examples(self):
      return 2

  trainer = loop_lib.Trainer(method_lib.StarMethod(config, data=NoData()),
                             config)
  expected = convert_official.convert_state_dict(
      convert_official.load_official_state_dict(path)[0])
  checkpointer = ckpt_lib.Checkpointer(out, best_metric=config.best_metric,
                                       async_save=False)
  try:
    # Both slots hold the same state; restoring one fully keeps this quick.
    assert checkpointer.step_for("latest") == checkpointer.step_for("best") == 0
    assert checkpointer.restore_config(0, "latest") == saved
    state, _, meta, cfg = checkpointer.restore(0, trainer.abstract_state,
                                               "best")
    assert cfg == saved and meta["state_key"] == "net"
    assert meta["converted_from"] == os.path.abspath(path)
    assert meta["official_epoch"] == 7
    for got in (state.params, state.ema[0]):
      jax.tree.map(np.testing.assert_array_equal, jax.device_get(got),
                   expected["params"])
    for got in (state.model_state, state.ema[1]):
      jax.tree.map(np.testing.assert_array_equal,
                   jax.device_get(got["batch_stats"]),
                   expected["batch_stats"])
    assert int(state.step) == 0
  finally:
    checkpointer.close()
  with pytest.raises(ValueError, match="not an empty directory"):
    convert_official.main(["--pkl", path, "--out", out])


def test_unmapped_missing_and_misshaped_tensors_are_listed(small_case):
  net = small_case[0]
  sd = numpy_state_dict(net)
  sd["hgs.0.extra_conv.weight"] = np.zeros((3, 3, 1, 1), np.float32)
  del sd["features.1.1.bn.running_var"]
  sd["merge_heatmaps.0.conv.weight"] = np.zeros((32, 67, 1, 1), np.float32)
  with pytest.raises(ValueError) as e:
    convert_official.convert_state_dict(sd)
  msg = str(e.value)
  assert "hgs.0.extra_conv.weight" in msg
  assert "batch_stats/feature_bn_1/var <- features.1.1.bn.running_var" in msg
  assert ("merge_heatmaps.0.conv.weight (32, 67, 1, 1) -> "
          "params/merge_heatmaps_0/kernel expects (68, 32)") in msg
  # A used skip convolution is never silently dropped.
  sd = numpy_state_dict(net)
  del sd["pre.4.skip_layer.conv.weight"]
  with pytest.raises(ValueError, match="stem/res3/skip/kernel"):
    convert_official.convert_state_dict(sd)


def test_aam_edges_must_match_our_scheme(small_case):
  sd = numpy_state_dict(small_case[0])
  sd["e2h_transform.weight"] = sd["e2h_transform.weight"].copy()
  sd["e2h_transform.weight"][17, 0] = 1.0  # Point 17 put on the contour.
  with pytest.raises(ValueError, match=r"edge-to-point matrix.*\[\[0, 17\]\]"):
    convert_official.convert_state_dict(sd)
  with pytest.raises(ValueError, match="expected 98"):
    convert_official.convert_state_dict(numpy_state_dict(small_case[0]), 98)


def test_pickles_need_consent_beyond_weights_only(small_case, tmp_path):
  net = small_case[0]
  path = str(tmp_path / "with_objects.pkl")
  wrapped = {f"module.{k}": v for k, v in net.state_dict().items()}
  torch.save({"net": wrapped, "args": argparse.Namespace(lr=1e-3)}, path)
  with pytest.raises(ValueError, match="--allow_unsafe_pickle"):
    convert_official.load_official_state_dict(path)
  with pytest.warns(UserWarning, match="arbitrary code"):
    sd, _ = convert_official.load_official_state_dict(
        path, allow_unsafe_pickle=True)
  ref = numpy_state_dict(net)
  assert sorted(sd) == sorted(ref)  # "module." stripped.
  for k in ref:
    np.testing.assert_array_equal(sd[k], ref[k])
  with pytest.raises(ValueError, match="no 'net_ema' entry"), \
       pytest.warns(UserWarning):
    convert_official.load_official_state_dict(
        path, state_key="net_ema", allow_unsafe_pickle=True)
  with pytest.raises(FileNotFoundError):
    convert_official.load_official_state_dict(str(tmp_path / "missing.pkl"))


@pytest.mark.parametrize("num_points,edges,expected", [
    (98, [tuple(range(a, b)) for a, b in
          ((0, 33), (33, 42), (42, 51), (51, 55), (55, 60), (60, 68),
           (68, 76), (76, 88), (88, 96))], 13_476_468),
    (68, EDGES_300W, 13_368_708),
    (29, [(0, 4, 2, 5), (1, 6, 3, 7), (8, 12, 10, 13), (9, 14, 11, 15),
          (18, 20, 19, 21), (22, 26, 23, 27), (22, 24, 23, 25)], 13_225_028),
])
def test_full_size_public_layout_converts_completely(num_points, edges,
                                                     expected):
  """The public 256 px model (4 stacks, depth 4, width 256), no forward."""
  net = StackedHGNetV1(num_points, edges)
  sd = numpy_state_dict(net)
  variables = convert_official.convert_state_dict(sd)
  arch = convert_official.infer_architecture(sd)
  assert (arch.num_stacks, arch.depth, arch.width) == (4, 4, 256)
  # Used parameters of the public model = ours (identity skips excluded).
  params = dict(net.named_parameters())
  identity_skips = sum(
      p.numel() for name, p in params.items() if ".skip_layer." in name and
      params[name.rsplit(".", 1)[0] + ".weight"].shape[:1] ==
      params[name.rsplit(".", 1)[0] + ".weight"].shape[1:2])
  public_used = sum(p.numel() for p in net.parameters()) - identity_skips
  ours = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  assert ours == public_used == expected
  # Spot checks of the layout changes.
  np.testing.assert_array_equal(
      variables["params"]["stem"]["coord_conv"]["kernel"],
      sd["pre.0.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables["params"]["hourglass_3"]["coord_conv"]["kernel"],
      sd["hgs.3.coordconv.conv.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(
      variables["batch_stats"]["hourglass_1"]["low2"]["low2"]["low2"]["low2"]
      ["bn3"]["var"],
      sd["hgs.1.low2.low2.low2.low2.bn3.running_var"])
