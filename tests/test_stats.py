"""The statistics of reports and searches, against known values."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from comicface import metrics, report, stats


def test_wilson_interval():
  lo, hi = stats.wilson_interval(1599, 1600)  # the CNN study: 1 error in 1,600
  assert lo == pytest.approx(0.99647, abs=1e-4) and hi == pytest.approx(0.99989, abs=1e-4)
  assert stats.wilson_interval(10, 10)[1] == 1.0 and stats.wilson_interval(0, 10)[0] == 0.0
  lo, hi = stats.wilson_interval(50, 100)
  assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)


def test_confusion_counts_true_by_predicted():
  m = report.confusion(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 0, 1, 1]), 3)
  assert m.tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]


def log_softmax32(logits: np.ndarray) -> np.ndarray:
  """Class log-probabilities in float32, computed as the model computes them."""
  z = np.asarray(logits, np.float32) - np.max(logits, -1, keepdims=True).astype(np.float32)
  return z - np.log(np.sum(np.exp(z), -1, keepdims=True))


@pytest.mark.parametrize('labels, log_probs', [
    ([1, 0, 0], np.log(np.array([[1e-9, 1 - 1e-9], [1e-8, 1 - 1e-8], [0.5, 0.5]])).astype(np.float32)),
    # a confident model: P(face) rounds to 1 in float32 for most; a few tied log-odds
    (np.random.default_rng(0).integers(0, 2, 200),
     log_softmax32(np.c_[np.zeros(200), np.random.default_rng(1).integers(-5, 40, 200)])),
], ids=['issue', 'confident'])
def test_the_roc_curve_has_the_area_of_the_auc(labels, log_probs):
  """The report's curve (metrics.roc_curve of the probabilities evaluation gives) ranks the
  examples as roc_auc does: its area is the AUC, where float32 probabilities would tie."""
  labels = np.asarray(labels)
  probs = metrics.probabilities(log_probs)
  assert probs.dtype == np.float64
  assert (np.exp(log_probs[:, 1]) == 1).sum() >= 2  # the premise: float32 probabilities tie at 1
  auc = metrics.roc_auc(labels, log_probs, ('comic', 'face'))
  fpr, tpr = metrics.roc_curve(labels, probs)
  assert np.trapezoid(tpr, fpr) == pytest.approx(auc, abs=1e-12)
  if len(labels) == 3:
    assert auc == 1.0


@pytest.mark.parametrize('only_a, only_b, p', [
    (0, 0, 1.0),              # no discordant example: nothing to tell them apart
    (1, 5, 2 * 7 / 64),       # P(X <= 1 | n=6) = (1 + 6) / 2^6, doubled
    (0, 10, 2 / 1024),
    (3, 13, 2 * 697 / 65536),  # 1 + 16 + 120 + 560 = 697
    (7, 7, 1.0),
])
def test_mcnemar_exact_against_known_tables(only_a, only_b, p):
  assert stats.mcnemar_exact(only_a, only_b) == pytest.approx(p)
  assert stats.mcnemar_exact(only_b, only_a) == pytest.approx(p)  # symmetric


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs():
  for only_a, only_b in [(2, 9), (12, 30), (40, 41), (0, 1), (25, 5)]:
    want = scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert stats.mcnemar_exact(only_a, only_b) == pytest.approx(want, rel=1e-9)


def test_paired_counts_the_discordant_examples_and_packs_round_trip():
  a = np.array([1, 1, 0, 0, 1, 1, 1, 0, 1], bool)
  b = np.array([1, 0, 0, 1, 0, 0, 1, 0, 1], bool)
  r = stats.paired(a, b)
  assert (r['examples'], r['right_only_first'], r['right_only_second']) == (9, 3, 1)
  np.testing.assert_array_equal(stats.unpack(stats.pack(a), len(a)), a)
