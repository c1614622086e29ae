"""Every metric of a split, from its labels and the model's class log-probabilities.

A metric is one function of (labels [n], log_probs [n, classes], class names) that
returns a float, or a dict of floats by key; `@metric(name)` registers it. `compute`
gives every registered metric, named `<split>_<metric>` ('val_accuracy', 'test_roc_auc')
or `<split>_<metric>_<key>` ('val_class_accuracy_face'). Evaluation, the epoch records,
results.json, the report, early stopping and the choice of the best checkpoint read them
by those names: a new metric is one decorated function.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray, Sequence[str]], 'float | dict[str, float]']
METRICS: dict[str, Metric] = {}
_HIGHER_IS_BETTER: dict[str, bool] = {}
_KEYED: set[str] = set()  # metrics that return a dict: their records are named <split>_<metric>_<key>
SPLITS = ('train', 'val', 'test', 'eval')  # the prefixes of the records' names


def metric(name: str, higher_is_better: bool = True, keyed: bool = False) -> Callable[[Metric], Metric]:
  """Registers the decorated function as the metric `name` (`keyed`: it returns a dict)."""
  def register(fn: Metric) -> Metric:
    METRICS[name], _HIGHER_IS_BETTER[name] = fn, higher_is_better
    if keyed:
      _KEYED.add(name)
    return fn
  return register


def _metric(record_name: str) -> str | None:
  """The registered metric a record's name ('val_class_accuracy_face') is of, or None."""
  split, _, name = record_name.partition('_')
  name = name if split in SPLITS else record_name
  return next((m for m in sorted(METRICS, key=len, reverse=True)
               if (name.startswith(m + '_') if m in _KEYED else name == m)), None)


def known(record_name: str) -> bool:
  """Whether a record's name is of a registered metric."""
  return _metric(record_name) is not None


def maximize(record_name: str) -> bool:
  """Whether a higher value is better for a record's name ('val_loss': no)."""
  return _HIGHER_IS_BETTER.get(_metric(record_name), True)


@metric('loss', higher_is_better=False)
def loss(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str]) -> float:
  """Mean cross-entropy."""
  return float(-np.mean(log_probs[np.arange(len(labels)), labels], dtype=np.float64))


@metric('accuracy')
def accuracy(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str]) -> float:
  return float(np.mean(log_probs.argmax(-1) == labels))


@metric('class_accuracy', keyed=True)
def class_accuracy(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
  """The accuracy on each class's examples (its recall), by class name; NaN for an absent class."""
  right = log_probs.argmax(-1) == labels
  return {name: float(right[labels == i].mean()) if np.any(labels == i) else float('nan')
          for i, name in enumerate(classes)}


@metric('roc_auc')
def roc_auc(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str]) -> float:
  """The area under the ROC curve of the second class's score, for two classes (else NaN,
  as where a class is absent): the chance that an example of class 1 scores above one of
  class 0, ties counting half (Mann-Whitney's U over n1 n0)."""
  positive = labels == 1
  if log_probs.shape[-1] != 2 or positive.all() or not positive.any():
    return float('nan')
  score = log_probs[:, 1] - log_probs[:, 0]  # rises with P(class 1)
  values, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
  mean_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based; tied scores share their mean rank
  n1, n0 = positive.sum(), (~positive).sum()
  return float((mean_rank[inverse][positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rates, true positive rates) of the second class's probability as the
  threshold falls through every distinct value, from (0, 0) to (1, 1)."""
  order = np.argsort(-probs[:, 1], kind='stable')
  score, positive = probs[order, 1], labels[order] == 1
  last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the last example at each threshold
  tp, fp = np.cumsum(positive)[last], np.cumsum(~positive)[last]
  return (np.r_[0, fp] / max(1, (~positive).sum()), np.r_[0, tp] / max(1, positive.sum()))


def compute(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str], prefix: str) -> dict[str, float]:
  """Every registered metric of one model's outputs, named `<prefix>_<metric>[_<key>]`."""
  out = {}
  for name, fn in METRICS.items():
    value = fn(labels, log_probs, classes)
    out.update({f'{prefix}_{name}_{k}': v for k, v in value.items()} if isinstance(value, dict)
               else {f'{prefix}_{name}': value})
  return out
