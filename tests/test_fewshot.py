"""Tests for sce_mae_jax.fewshot (limited-annotation sampling and table)."""

import numpy as np
import pytest

from sce_mae_jax import fewshot
from sce_mae_jax import stage2


def test_sampling_reproducible_distinct_and_seed_dependent():
  pool = np.arange(500)
  a = fewshot.sample_few_shot(pool, 20, seed=1)
  b = fewshot.sample_few_shot(pool, 20, seed=1)
  c = fewshot.sample_few_shot(pool, 20, seed=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert len(set(a.tolist())) == 20 and np.all(np.diff(a) > 0)
  assert set(a.tolist()) <= set(pool.tolist())


def test_sampling_disjoint_from_val_split():
  split = stage2.fixed_split(200, 50, seed=0)
  for seed in range(5):
    for n in (1, 5, 10, 20, 50, 100):
      got = fewshot.sample_few_shot(np.arange(200), n, seed,
                                    exclude=split["val"])
      assert not set(got.tolist()) & set(split["val"].tolist())
  with pytest.raises(ValueError):
    fewshot.sample_few_shot(np.arange(10), 11, 0)
  with pytest.raises(ValueError):
    fewshot.sample_few_shot(np.arange(10), 5, 0, exclude=np.arange(7))


def test_summary_and_table():
  s = fewshot.summarise({5: [10.0, 12.0, 14.0], 1: [20.0, 20.0, 23.0]})
  assert list(s) == [1, 5]
  np.testing.assert_allclose(s[5]["mean"], 12.0)
  np.testing.assert_allclose(s[5]["std"], np.sqrt(8.0 / 3.0))
  table = fewshot.markdown_table(s, "faces")
  assert "| faces | 1 | 5 |" in table
  assert "21.00 ± 1.41" in table and "12.00 ± 1.63" in table


def test_table_reference_row():
  s = fewshot.summarise({1: [20.0, 22.0, 24.0]})
  ref = fewshot.summarise({1: [13.0, 13.0, 13.0]})
  table = fewshot.markdown_table(s, "faces", ref).splitlines()
  assert table[2] == "| NME (%) | 22.00 ± 1.63 |"
  assert table[3] == "| mean shape of the n faces (reference) | 13.00 ± 0.00 |"
