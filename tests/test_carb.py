"""Tests for sce_mae_jax.carb: eq. 1 split and density-peak clustering."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_mae_jax import carb


def _ref_carb(sim, tokens, out, eta, k_clusters, knn, replace, grid_w,
              scale_by_dim=True):
  """Float64 loop reference of the whole selection (no tie-break noise);
  distances divided by sqrt(C) when `scale_by_dim`."""
  sim = np.asarray(sim, np.float64)
  tokens = np.asarray(tokens, np.float64)
  out = np.asarray(out, np.float64)
  n = len(sim)
  k_att = int(math.floor(eta * n + 0.5))
  order = sorted(range(n), key=lambda i: -sim[i])
  att, inatt = order[:k_att], order[k_att:]
  x = tokens[inatt]
  m = len(inatt)
  dist = np.zeros((m, m))
  for i in range(m):
    for j in range(m):
      dist[i, j] = math.sqrt(sum((x[i] - x[j]) ** 2))
      if scale_by_dim:
        dist[i, j] /= math.sqrt(x.shape[1])
  rho = np.zeros(m)
  for i in range(m):
    others = sorted(dist[i, j] ** 2 for j in range(m) if j != i)
    rho[i] = math.exp(-sum(others[:knn]) / knn)
  delta = np.zeros(m)
  for i in range(m):
    denser = [dist[i, j] for j in range(m) if rho[j] > rho[i]]
    delta[i] = min(denser) if denser else max(dist[i])
  score = rho * delta
  centres = sorted(range(m), key=lambda i: -score[i])[:k_clusters]
  assign = []
  for i in range(m):
    if i in centres:
      assign.append(centres.index(i))
    else:
      assign.append(int(np.argmin([dist[i, c] for c in centres])))
  if replace == "centre":
    centre_feats = [out[inatt[c]] for c in centres]
  else:
    centre_feats = [np.mean([out[inatt[i]] for i in range(m) if assign[i] == q],
                            axis=0) for q in range(k_clusters)]
  cluster_of_patch = np.full(n, -1)
  approx = out.copy()
  for i in range(m):
    cluster_of_patch[inatt[i]] = assign[i]
    approx[inatt[i]] = centre_feats[assign[i]]
  kept = att + [inatt[c] for c in centres]
  return dict(
      kept_index=np.array(kept),
      kept_features=np.concatenate([out[att], np.array(centre_feats)]),
      kept_positions=np.array([[p // grid_w, p % grid_w] for p in kept]),
      cluster_of_patch=cluster_of_patch, approx=approx, score=score,
      centres=centres, dist=dist)


def _random_inputs(seed, n=36, c=8, c_out=5):
  rng = np.random.RandomState(seed)
  sim = rng.dirichlet(np.ones(n)).astype(np.float32)
  tokens = rng.normal(size=(n, c)).astype(np.float32)
  out = rng.normal(size=(n, c_out)).astype(np.float32)
  return sim, tokens, out


@pytest.mark.parametrize("seed,replace,eta,scale", [(0, "centre", 0.1, True),
                                                    (1, "mean", 0.25, True),
                                                    (2, "centre", 0.25, True),
                                                    (0, "centre", 0.1, False)])
def test_carb_matches_float64_loop_reference(seed, replace, eta, scale):
  sim, tokens, out = _random_inputs(seed)
  ref = _ref_carb(sim, tokens, out, eta, 4, 5, replace, grid_w=6,
                  scale_by_dim=scale)
  # The reference ranking must not hinge on float32 rounding.
  s = np.sort(ref["score"])[::-1]
  assert (s[3] - s[4]) / s[3] > 1e-3
  sel = jax.jit(functools.partial(carb.carb_select, eta=eta, replace=replace,
                                  scale_by_dim=scale))(
      jnp.asarray(sim), jnp.asarray(tokens), None, jnp.asarray(out))
  np.testing.assert_array_equal(sel.kept_index, ref["kept_index"])
  np.testing.assert_array_equal(sel.cluster_of_patch, ref["cluster_of_patch"])
  np.testing.assert_allclose(sel.kept_features, ref["kept_features"],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sel.approx_tokens, ref["approx"], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(sel.kept_positions, ref["kept_positions"])
  k_att = int(math.floor(eta * 36 + 0.5))
  np.testing.assert_array_equal(sel.kept_is_attentive,
                                np.arange(k_att + 4) < k_att)
  # Every inattentive patch is represented by its centre's patch index.
  centre_patch = ref["kept_index"][k_att:]
  for p in range(36):
    q = ref["cluster_of_patch"][p]
    assert sel.representative[p] == (p if q < 0 else centre_patch[q])


def test_tie_break_noise_keeps_result_on_distinct_tokens():
  sim, tokens, out = _random_inputs(0)
  select = jax.jit(carb.carb_select)
  a = select(jnp.asarray(sim), jnp.asarray(tokens), None)
  b = select(jnp.asarray(sim), jnp.asarray(tokens), jax.random.PRNGKey(3))
  np.testing.assert_array_equal(a.kept_index, b.kept_index)
  np.testing.assert_array_equal(a.cluster_of_patch, b.cluster_of_patch)


def test_clustering_recovers_separated_blobs():
  # Four compact, well separated blobs of different sizes: one centre per blob;
  # the assignment equals the blob labels up to a permutation.
  rng = np.random.RandomState(5)
  sizes = [20, 12, 8, 6]
  means = rng.normal(size=(4, 6)) * 20
  x = np.concatenate([means[q] + 0.5 * rng.normal(size=(s, 6))
                      for q, s in enumerate(sizes)]).astype(np.float32)
  labels = np.repeat(np.arange(4), sizes)
  clus = jax.jit(carb.density_peak_clustering)(jnp.asarray(x))
  assert sorted(labels[np.asarray(clus.centres)]) == [0, 1, 2, 3]
  mapped = labels[np.asarray(clus.centres)][np.asarray(clus.assignment)]
  np.testing.assert_array_equal(mapped, labels)


def _grouped_tokens(seed=0, c=192):
  """Four well separated groups of ViT-width tokens, one much tighter (the
  densest) and the largest."""
  rng = np.random.RandomState(seed)
  sizes, spreads = [60, 30, 25, 15], [0.2, 0.5, 0.5, 0.5]
  means = rng.normal(size=(4, c))
  x = np.concatenate([means[q] + spreads[q] * rng.normal(size=(s, c))
                      for q, s in enumerate(sizes)]).astype(np.float32)
  return x, np.repeat(np.arange(4), sizes)


def test_scaled_dpc_picks_one_centre_per_group():
  x, labels = _grouped_tokens()
  clus = jax.jit(carb.density_peak_clustering)(jnp.asarray(x))  # default
  assert sorted(labels[np.asarray(clus.centres)]) == [0, 1, 2, 3]
  mapped = labels[np.asarray(clus.centres)][np.asarray(clus.assignment)]
  np.testing.assert_array_equal(mapped, labels)


def test_unscaled_dpc_ranks_by_density_alone_on_wide_tokens():
  # Why `scale_by_dim` is the default: on 192-d tokens the unscaled score
  # takes every centre from the densest group.
  x, labels = _grouped_tokens()
  clus = jax.jit(functools.partial(carb.density_peak_clustering,
                                   scale_by_dim=False))(jnp.asarray(x))
  assert set(labels[np.asarray(clus.centres)].tolist()) == {0}


def test_density_uses_corrected_sign():
  # A token far from all others must be the least dense (printed eq. 2 would
  # make it the densest).
  rng = np.random.RandomState(0)
  x = rng.normal(size=(12, 3)).astype(np.float32)
  x[7] += 50.0
  sq = carb.pairwise_sq_distances(jnp.asarray(x))
  log_rho = np.asarray(carb.knn_log_density(sq, 5))
  assert int(np.argmin(log_rho)) == 7
  d2 = ((x[:, None] - x[None]) ** 2).sum(-1).astype(np.float64)
  np.fill_diagonal(d2, np.inf)
  expected = -np.sort(d2, axis=1)[:, :5].mean(axis=1)
  np.testing.assert_allclose(log_rho, expected, rtol=1e-4)


def test_cls_attention_from_map_equals_eq1_from_queries_and_keys():
  rng = np.random.RandomState(0)
  b, h, n, d = 2, 3, 16, 4
  q = rng.normal(size=(b, h, 1 + n, d)).astype(np.float32)
  k = rng.normal(size=(b, h, 1 + n, d)).astype(np.float32)
  logits = np.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
  attn = np.exp(logits - logits.max(-1, keepdims=True))
  attn /= attn.sum(-1, keepdims=True)  # ViT attention over CLS + N keys.
  from_map = carb.cls_attention_from_map(jnp.asarray(attn))
  from_qk = carb.cls_similarity_from_qk(jnp.asarray(q[:, :, 0]),
                                        jnp.asarray(k[:, :, 1:]))
  np.testing.assert_allclose(from_map, from_qk, rtol=1e-5, atol=1e-7)
  # Per head eq. 1 sums to one over patches, so the head mean does too.
  np.testing.assert_allclose(np.asarray(from_map).sum(-1), 1.0, rtol=1e-5)


def test_static_shapes_compile_once():
  traces = []

  def fn(sim, tokens, key):
    traces.append(1)
    return carb.carb_select_batch(sim, tokens, key, eta=0.25, num_clusters=4)

  jitted = jax.jit(fn)
  for seed in range(3):
    rng = np.random.RandomState(seed)
    sim = jnp.asarray(rng.rand(2, 36).astype(np.float32))
    tokens = jnp.asarray(rng.normal(size=(2, 36, 8)).astype(np.float32))
    sel = jitted(sim, tokens, jax.random.PRNGKey(seed))
    assert sel.kept_index.shape == (2, 9 + 4)
    assert sel.kept_features.shape == (2, 13, 8)
    # Kept tokens are distinct patches, attentive ones are the top-9 by eq. 1.
    for i in range(2):
      assert len(set(np.asarray(sel.kept_index[i]).tolist())) == 13
      top = set(np.argsort(-np.asarray(sim[i]))[:9].tolist())
      assert set(np.asarray(sel.kept_index[i, :9]).tolist()) == top
  assert len(traces) == 1


def test_batch_equals_per_image():
  rng = np.random.RandomState(4)
  sim = jnp.asarray(rng.rand(3, 36).astype(np.float32))
  tokens = jnp.asarray(rng.normal(size=(3, 36, 8)).astype(np.float32))
  batched = carb.carb_select_batch(sim, tokens, None, replace="mean")
  select = jax.jit(functools.partial(carb.carb_select, replace="mean"))
  for i in range(3):
    single = select(sim[i], tokens[i], None)
    np.testing.assert_array_equal(batched.kept_index[i], single.kept_index)
    np.testing.assert_array_equal(batched.cluster_of_patch[i],
                                  single.cluster_of_patch)
    np.testing.assert_allclose(batched.approx_tokens[i], single.approx_tokens,
                               rtol=1e-5, atol=1e-6)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="eta"):
    carb.attentive_count(144, 1.5)
  with pytest.raises(ValueError, match="grid_shape"):
    carb.carb_select(jnp.ones(10), jnp.ones((10, 3)))
  with pytest.raises(ValueError, match="replace"):
    carb.carb_select(jnp.ones(16), jnp.ones((16, 3)), replace="median")
  assert carb.attentive_count(144, 0.1) == 14
  assert carb.attentive_count(144, 0.25) == 36
  assert carb.attentive_count(10, 0.25) == 3  # 2.5 rounds up.
