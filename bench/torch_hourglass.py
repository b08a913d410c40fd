"""The STAR stacked hourglass in PyTorch: the speed reference for the bench.

Bench-only (PyTorch is not a project dependency; install the CPU build with
`pip install torch==2.13.0`). Our own PyTorch code for the same architecture
as `star_jax.model.StackedHourglass` (used layers only; same parameter count),
so that `bench/hourglass_step.py` compares equal work. It is not used to load
or check official weights.
"""

import torch
from torch import nn
import torch.nn.functional as F


def coordinate_channels(height: int, width: int) -> torch.Tensor:
  """`[3, H, W]`: rows in [-1, 1], columns in [-1, 1], radius / max radius."""
  rows = torch.linspace(-1, 1, height)[:, None].expand(height, width)
  cols = torch.linspace(-1, 1, width)[None, :].expand(height, width)
  r = torch.sqrt(rows**2 + cols**2)
  return torch.stack([rows, cols, r / r.max()])


class ResBlock(nn.Module):
  """Pre-activation bottleneck; 1x1 skip conv only when channels change."""

  def __init__(self, c_in: int, c_out: int):
    super().__init__()
    mid = c_out // 2
    self.bn1, self.bn2, self.bn3 = (nn.BatchNorm2d(c_in), nn.BatchNorm2d(mid),
                                    nn.BatchNorm2d(mid))
    self.conv1 = nn.Conv2d(c_in, mid, 1)
    self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
    self.conv3 = nn.Conv2d(mid, c_out, 1)
    self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

  def forward(self, x):
    residual = x if self.skip is None else self.skip(x)
    y = self.conv1(F.relu(self.bn1(x)))
    y = self.conv2(F.relu(self.bn2(y)))
    y = self.conv3(F.relu(self.bn3(y)))
    return y + residual


class Hourglass(nn.Module):
  """Recursive hourglass; the outermost level starts with a 1x1 CoordConv."""

  def __init__(self, depth: int, width: int, coord_in: int = 0):
    super().__init__()
    self.coord_conv = (nn.Conv2d(width + coord_in, width, 1)
                       if coord_in else None)
    self.up1 = ResBlock(width, width)
    self.low1 = ResBlock(width, width)
    self.low2 = (Hourglass(depth - 1, width) if depth > 1
                 else ResBlock(width, width))
    self.low3 = ResBlock(width, width)

  def forward(self, x, extra=None):
    if self.coord_conv is not None:
      x = self.coord_conv(torch.cat([x, extra], 1))
    up = self.up1(x)
    low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
    return up + F.interpolate(low, scale_factor=2, mode="nearest")


class StackedHourglass(nn.Module):
  """Same layers and maths as star_jax.model.StackedHourglass (NCHW API)."""

  def __init__(self, num_points: int, e2p: torch.Tensor, num_stacks=4,
               depth=4, width=256, use_aam=True):
    super().__init__()
    self.use_aam = use_aam
    num_edges = e2p.shape[0]
    self.register_buffer("e2p", e2p.float())  # [E, N]
    self.register_buffer("no_edge", (e2p.sum(0) < 0.5).float())
    self.num_stacks = num_stacks
    self.stem_conv = nn.Conv2d(6, 64, 7, stride=2, padding=3)
    self.stem_bn = nn.BatchNorm2d(64)
    self.stem_res = nn.ModuleList([ResBlock(64, 128), ResBlock(128, 128),
                                   ResBlock(128, width)])
    self.hourglasses = nn.ModuleList(
        [Hourglass(depth, width, 3 if i == 0 else 5)
         for i in range(num_stacks)])
    self.feature_res = nn.ModuleList(
        [ResBlock(width, width) for _ in range(num_stacks)])
    self.feature_conv = nn.ModuleList(
        [nn.Conv2d(width, width, 1) for _ in range(num_stacks)])
    self.feature_bn = nn.ModuleList(
        [nn.BatchNorm2d(width) for _ in range(num_stacks)])
    head = lambda c: nn.ModuleList(  # pylint: disable=g-long-lambda
        [nn.Conv2d(width, c, 1) for _ in range(num_stacks)])
    self.heat_head, self.point_head = head(num_points), head(num_points)
    self.edge_head = head(num_edges)
    merge = lambda c: nn.ModuleList(  # pylint: disable=g-long-lambda
        [nn.Conv2d(c, width, 1) for _ in range(num_stacks - 1)])
    self.merge_feature, self.merge_heat = merge(width), merge(num_points)
    self.merge_point, self.merge_edge = merge(num_points), merge(num_edges)
    if not use_aam:
      del self.point_head, self.edge_head, self.merge_point, self.merge_edge

  def forward(self, images):
    """images: float `[B, 3, S, S]` in [0, 255] -> list of fused heatmaps
    (with use_aam=False: of the activated heatmaps)."""
    b, _, s, _ = images.shape
    x = (images - 127.5) / 127.5
    coords = coordinate_channels(s, s).to(x)[None].expand(b, -1, -1, -1)
    x = torch.cat([x, coords], 1).contiguous(
        memory_format=torch.channels_last)
    x = F.relu(self.stem_bn(self.stem_conv(x)))
    x = self.stem_res[0](x)
    x = self.stem_res[2](self.stem_res[1](F.max_pool2d(x, 2)))
    h = x.shape[-1]
    grid = coordinate_channels(h, h).to(x)[None].expand(b, -1, -1, -1)
    fused_all, heat = [], None
    for i in range(self.num_stacks):
      extra = grid
      if heat is not None:
        keep = (heat[:, -1:].detach().clamp(0, 1) > 0.05).to(grid)
        extra = torch.cat([grid, grid[:, :2] * keep], 1)
      hg = self.hourglasses[i](x, extra.to(x.dtype))
      feature = self.feature_res[i](hg)
      feature = F.relu(self.feature_bn[i](self.feature_conv[i](feature)))
      heat = F.relu(F.instance_norm(self.heat_head[i](feature).float()))
      if not self.use_aam:       # model.use_aam=False: the heatmaps alone.
        fused_all.append(heat)
        if i < self.num_stacks - 1:
          x = x + self.merge_feature[i](feature) + self.merge_heat[i](heat)
        continue
      point = torch.sigmoid(self.point_head[i](feature).float())
      edge = torch.sigmoid(self.edge_head[i](feature).float())
      mask = (torch.einsum("behw,en->bnhw", edge, self.e2p)
              + self.no_edge[None, :, None, None]) * point
      fused_all.append(mask * heat)
      if i < self.num_stacks - 1:
        x = (x + self.merge_feature[i](feature) + self.merge_heat[i](heat)
             + self.merge_point[i](point) + self.merge_edge[i](edge))
    return fused_all
