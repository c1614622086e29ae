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
_MIN_CLASSES: dict[str, int] = {}  # metrics given only for data of at least that many classes
SPLITS = ('train', 'val', 'test', 'eval')  # the prefixes of the records' names
TOP_K = 5  # top-k accuracy's k


def metric(name: str, higher_is_better: bool = True, keyed: bool = False,
           min_classes: int = 2) -> Callable[[Metric], Metric]:
  """Registers the decorated function as the metric `name` (`keyed`: it returns a dict),
  computed for data of at least `min_classes` classes."""
  def register(fn: Metric) -> Metric:
    METRICS[name], _HIGHER_IS_BETTER[name], _MIN_CLASSES[name] = fn, higher_is_better, min_classes
    if keyed:
      _KEYED.add(name)
    return fn
  return register


def _applicable(classes: Sequence[str]) -> list[str]:
  """The registered metrics of data of `classes`, in registration order."""
  return [m for m in METRICS if len(classes) >= _MIN_CLASSES[m]]


def _metric(record_name: str) -> str | None:
  """The registered metric a record's name ('val_class_accuracy_face') is of, or None."""
  split, _, name = record_name.partition('_')
  name = name if split in SPLITS else record_name
  return next((m for m in sorted(METRICS, key=len, reverse=True)
               if (name.startswith(m + '_') if m in _KEYED else name == m)), None)


def names(split: str, classes: Sequence[str]) -> list[str]:
  """The name of every record that `compute` gives for `split` ('val') of data of `classes`."""
  out = []
  for m in _applicable(classes):
    out += [f'{split}_{m}_{c}' for c in classes] if m in _KEYED else [f'{split}_{m}']
  return out


def keyed(record_name: str) -> bool:
  """Whether a record is one key of a metric ('val_class_accuracy_face': yes)."""
  return _metric(record_name) in _KEYED


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


@metric('top5_accuracy', min_classes=TOP_K + 1)
def top5_accuracy(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str]) -> float:
  """The fraction of examples whose class is among the model's 5 most probable (ties broken
  by `np.argpartition`), for more than 5 classes."""
  top = np.argpartition(-log_probs, TOP_K - 1, axis=-1)[:, :TOP_K]
  return float(np.mean((top == labels[:, None]).any(-1)))


@metric('class_accuracy', keyed=True)
def class_accuracy(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
  """The accuracy on each class's examples (its recall), by class name; NaN for an absent class."""
  k = len(classes)
  right = np.bincount(labels, weights=log_probs.argmax(-1) == labels, minlength=k)
  with np.errstate(invalid='ignore'):
    return dict(zip(classes, map(float, right / np.bincount(labels, minlength=k))))


@metric('roc_auc')
def roc_auc(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str]) -> float:
  """The area under the ROC curve of each class against the others by its log-odds
  (`_log_odds` of `probabilities`), averaged over the classes present in `labels`
  (one-vs-rest macro average; NaN where fewer than two classes are present). For two
  classes, both classes' areas are the usual AUC: the chance that an example of class 1
  scores above one of class 0, ties counting half."""
  score = _log_odds(probabilities(log_probs))
  aucs = np.array([_auc(score[:, c], labels == c) for c in range(len(classes))])
  aucs = aucs[~np.isnan(aucs)]
  return float(aucs.mean()) if len(aucs) else float('nan')


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
  """The chance that a positive example scores above a negative one, ties counting half:
  Mann-Whitney's U over n1 n0, from the scores' ranks (NaN where either side is empty)."""
  n1 = int(positive.sum())
  n0 = len(positive) - n1
  if not n1 or not n0:
    return float('nan')
  _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
  mean_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based; tied scores share their mean rank
  return float((mean_rank[inverse][positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def probabilities(log_probs: np.ndarray) -> np.ndarray:
  """The class probabilities of the model's log-probabilities, in float64 (in float32,
  1 - 1e-9 and 1 - 1e-8 are both 1.0): what evaluation gives the report and saves."""
  return np.exp(np.asarray(log_probs, np.float64))


def _log_odds(probs: np.ndarray) -> np.ndarray:
  """[n, classes]: log P(c) - log P(not c) of each class c, its one-vs-rest ROC's score (for
  two classes, log P(class 1) - log P(class 0) in column 1), with P(not c) the sum of the other
  classes' probabilities: unlike 1 - P(c), it keeps apart examples whose P(c) rounds to 1."""
  rows, top = np.arange(len(probs)), probs.argmax(-1)
  others = probs.copy()
  others[rows, top] = 0
  below_top = others.sum(-1, keepdims=True)  # every class's but the most probable one's
  rest = probs[rows, top][:, None] + (below_top - others)  # for two classes, exactly the other one
  rest[rows, top] = below_top[:, 0]
  with np.errstate(divide='ignore'):
    return np.log(probs) - np.log(rest)


def roc_curve(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rates, true positive rates) of `probabilities`' [n, 2] as the
  threshold falls through every distinct score that `roc_auc` ranks by, from (0, 0) to
  (1, 1): the curve whose area (trapezoids; ties make the diagonals) is `roc_auc`."""
  score = _log_odds(probs)[:, 1]
  order = np.argsort(-score, kind='stable')
  score, positive = score[order], labels[order] == 1
  last = np.r_[np.flatnonzero(score[1:] != score[:-1]), len(score) - 1]  # the last example at each threshold
  tp, fp = np.cumsum(positive)[last], np.cumsum(~positive)[last]
  return (np.r_[0, fp] / max(1, (~positive).sum()), np.r_[0, tp] / max(1, positive.sum()))


def compute(labels: np.ndarray, log_probs: np.ndarray, classes: Sequence[str], prefix: str) -> dict[str, float]:
  """Every registered metric of one model's outputs, named `<prefix>_<metric>[_<key>]`."""
  out = {}
  for name in _applicable(classes):
    value = METRICS[name](labels, log_probs, classes)
    out.update({f'{prefix}_{name}_{k}': v for k, v in value.items()} if isinstance(value, dict)
               else {f'{prefix}_{name}': value})
  return out
