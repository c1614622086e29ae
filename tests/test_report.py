"""The report's statistics."""
import numpy as np
import pytest

from comicface import report


def test_wilson_interval():
  lo, hi = report.wilson_interval(1599, 1600)  # the CNN study: 1 error in 1,600
  assert lo == pytest.approx(0.99647, abs=1e-4) and hi == pytest.approx(0.99989, abs=1e-4)
  assert report.wilson_interval(10, 10)[1] == 1.0 and report.wilson_interval(0, 10)[0] == 0.0
  lo, hi = report.wilson_interval(50, 100)
  assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)


def test_confusion_counts_true_by_predicted():
  m = report.confusion(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 0, 1, 1]), 3)
  assert m.tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
