"""What a finished run leaves to look at: report.md and PNG figures in its workdir."""
from __future__ import annotations

import math
import pathlib
from typing import Any, Sequence

import matplotlib
matplotlib.use('Agg')
from matplotlib import colors  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from comicface import checkpointing
from comicface import metrics
from comicface import stats

NUMBERED = 20  # the most classes whose confusion figure writes the counts in its cells
LISTED = 20  # beyond NUMBERED classes, report.md lists this many most frequent confusions
CURVE_CLASSES = 5  # the most classes whose accuracies each get a column of the curves' table


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """[true, predicted] counts."""
  m = np.zeros((num_classes, num_classes), int)
  np.add.at(m, (labels, predicted), 1)
  return m


def _curves(history: Sequence[dict], path: pathlib.Path) -> None:
  epochs = [h['epoch'] for h in history]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for ax, metric in zip(axes, ('accuracy', 'loss')):
    for split in ('train', 'val'):
      ax.plot(epochs, [h[f'{split}_{metric}'] for h in history], 'o-', label=split)
    ax.set(xlabel='epoch', ylabel=metric, title=metric)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _confusion_png(m: np.ndarray, classes: Sequence[str], path: pathlib.Path) -> None:
  """The counts as colours, numbered up to NUMBERED classes; beyond, on a log scale (so that
  single errors show beside the diagonal) with a colour bar. Cells shrink from 0.6 to 0.18
  inches as classes grow, and the figure grows beyond 40 classes."""
  k = len(classes)
  cell = min(0.6, max(0.18, 7.2 / k))
  fig, ax = plt.subplots(figsize=(2.4 + cell * k, 2.0 + cell * k))
  if k <= NUMBERED:
    ax.imshow(m, cmap='Blues')
    for (i, j), v in np.ndenumerate(m):
      ax.text(j, i, str(v), ha='center', va='center', color='white' if v > m.max() / 2 else 'black',
              fontsize=min(14, 25 * cell))
  else:
    shown = ax.imshow(np.ma.masked_equal(m, 0), cmap='viridis_r', norm=colors.LogNorm(vmin=1, vmax=max(2, m.max())))
    fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02, format='%g', label='images (log scale; white: none)')
  labels = min(10, 40 * cell)
  ax.set_xticks(range(k))
  ax.set_xticklabels(classes, fontsize=labels, rotation=90 if k > 2 else 0)
  ax.set_yticks(range(k))
  ax.set_yticklabels(classes, fontsize=labels)
  ax.set(xlabel='predicted', ylabel='true', title='test confusion')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _roc_png(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], auc: float, path: pathlib.Path) -> None:
  fpr, tpr = metrics.roc_curve(labels, probs)
  fig, ax = plt.subplots(figsize=(3.6, 3.4))
  ax.plot(fpr, tpr, '-', lw=2, label=f'AUC {auc:.4f}')
  ax.plot([0, 1], [0, 1], ':', color='grey')
  ax.set(xlabel=f'false {classes[1]} rate', ylabel=f'true {classes[1]} rate', title='test ROC', xlim=(0, 1),
         ylim=(0, 1.01))
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _misclassified_png(images: list[np.ndarray], captions: list[str], path: pathlib.Path) -> None:
  cols = max(1, min(8, len(images)))
  rows = max(1, math.ceil(len(images) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 2.3 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, img, caption in zip(axes.flat, images, captions):
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap='gray', vmin=0, vmax=255)
    ax.set_title(caption, fontsize=8)
  if not images:
    axes[0, 0].text(0.5, 0.5, 'no test image\nmisclassified', ha='center', va='center')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _grid_png(trials: Sequence[dict], axes_names: Sequence[str], path: pathlib.Path) -> None:
  """Validation accuracy of every trial: rows and columns are combinations of the axes."""
  half = max(1, len(axes_names) // 2)
  row_axes, col_axes = axes_names[:half], axes_names[half:]
  label = lambda t, names: ', '.join(f'{n.split(".")[-1]}={t[n]}' for n in names) or '-'
  rows = list(dict.fromkeys(label(t, row_axes) for t in trials))
  cols = list(dict.fromkeys(label(t, col_axes) for t in trials))
  grid = np.full((len(rows), len(cols)), np.nan)
  for t in trials:
    grid[rows.index(label(t, row_axes)), cols.index(label(t, col_axes))] = t['val_accuracy']
  fig, ax = plt.subplots(figsize=(2 + 1.6 * len(cols), 1.2 + 0.6 * len(rows)))
  ax.imshow(grid, cmap='viridis', aspect='auto')
  for (i, j), v in np.ndenumerate(grid):
    ax.text(j, i, f'{v:.4f}', ha='center', va='center', color='white', fontsize=8)
  ax.set(xticks=range(len(cols)), yticks=range(len(rows)), title='validation accuracy per trial')
  ax.set_xticklabels(cols, rotation=30, ha='right', fontsize=8)
  ax.set_yticklabels(rows, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _trials_png(trials: Sequence[dict], best_by: str, path: pathlib.Path) -> None:
  """Validation accuracy of every trial, best first, with its spread over seeds."""
  ranked = sorted(trials, key=lambda t: checkpointing.rank({**t, 'epoch': t['best_epoch']}, best_by), reverse=True)
  fig, ax = plt.subplots(figsize=(7, 0.8 + 0.25 * len(ranked)))
  ax.barh(range(len(ranked)), [t['val_accuracy'] for t in ranked],
          xerr=[t['val_accuracy_std'] for t in ranked], color='tab:blue')
  ax.set_yticks(range(len(ranked)))
  ax.set_yticklabels([t['trial'] for t in ranked], fontsize=7)
  ax.invert_yaxis()
  low = min(t['val_accuracy'] for t in ranked)
  ax.set(xlim=(max(0.0, low - 0.05), 1.0), xlabel='validation accuracy (best epoch)', title='trials')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _search_section(results: dict[str, Any], trials: Sequence[dict], axes_names: Sequence[str],
                    out: pathlib.Path) -> list[str]:
  """The search's part of the report: winner, budget spent, rungs, the trials, the paired test."""
  config = results['config']
  chosen = ', '.join(f'{k}={v}' for k, v in results['chosen'].items())
  retrained = (f'retrained on {"+".join(config["retrain_splits"])}' if config['retrain_splits']
               else 'tested as trained, not retrained')
  lines = [f'## Search: {results["search"]}', '',
           f'Winner: {chosen}, {results["best_epoch"]} epochs ({retrained}). '
           f'{len(trials)} trials, {results["trial_epochs"]} trial-epochs'
           + (f', {results["seeds"]} seeds each ({results["model_epochs"]} model-epochs)' if results['seeds'] > 1
              else '') + '.', '']
  if results['comparison']:
    lines += [f'Against the runner-up: {results["comparison"]["verdict"]}.', '']
  if results['rungs']:
    lines += ['Rungs (trials ranked at each, best first):', '',
              _table([{'bracket': r['bracket'], 'epochs': r['epochs'], 'trials': len(r['trials']),
                       'survivors': ', '.join(r['survivors'])} for r in results['rungs']],
                     ['bracket', 'epochs', 'trials', 'survivors']), '']
  best_by = config.get('best_by', 'val_accuracy')  # an earlier release's results have none
  ranked = sorted(trials, key=lambda t: checkpointing.rank({**t, 'epoch': t['best_epoch']}, best_by), reverse=True)
  columns = ['trial', *axes_names, 'best_epoch', 'val_accuracy', *(['val_accuracy_std'] if results['seeds'] > 1
                                                                  else []), 'val_loss', 'epochs_trained']
  if results['search'] == 'grid':
    _grid_png(trials, axes_names, out / 'grid.png')
    figure = '![grid](grid.png)'
  else:
    _trials_png(trials, best_by, out / 'trials.png')
    figure = '![trials](trials.png)'
  return lines + [_table(ranked, columns), '', figure, '']


def _confusion_section(m: np.ndarray, classes: Sequence[str]) -> list[str]:
  """The confusion matrix as a table up to NUMBERED classes; beyond, its LISTED largest
  counts off the diagonal."""
  if len(classes) <= NUMBERED:
    return ['## Test confusion (rows: true, columns: predicted)', '',
            _table([{'': classes[i], **{c: int(m[i, j]) for j, c in enumerate(classes)}}
                    for i in range(len(classes))], ['', *classes]), '']
  off = m - np.diag(np.diag(m))
  order = np.argsort(-off, axis=None, kind='stable')[:LISTED]
  rows = [{'true': classes[i], 'predicted': classes[j], 'images': int(off[i, j])}
          for i, j in zip(*np.unravel_index(order, m.shape)) if off[i, j]]
  return [f'## Test confusion: the {len(rows)} most frequent confusions of {len(classes)} classes', '',
          _table(rows, ['true', 'predicted', 'images']) if rows else 'None: no test image misclassified.', '']


def _short(name: str, width: int = 16) -> str:
  """`name`, cut to `width` characters (the last an ellipsis) to fit under an image."""
  return name if len(name) <= width else name[:width - 1] + '…'


def _table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  fmt = lambda v: f'{v:.4f}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  return '\n'.join(lines + ['| ' + ' | '.join(fmt(r[c]) for c in columns) + ' |' for r in rows])


def write(workdir: str, results: dict[str, Any], split: Any, probs: np.ndarray, classes: Sequence[str],
          trials: Sequence[dict] = (), axes_names: Sequence[str] = ()) -> None:
  """Writes report.md, curves.png, confusion.png, roc.png (two classes), misclassified.png
  (and, for a search, grid.png or trials.png).

  `split` is the test split (an input_pipeline.Split), `probs` its [example, class]
  probabilities in its order, `classes` the class names; `trials` the grid's table,
  one dict per trial.
  """
  out = pathlib.Path(workdir)
  labels, predicted = split.labels(), probs.argmax(-1)
  m = confusion(labels, predicted, len(classes))
  n, errors = int(m.sum()), int(m.sum() - np.trace(m))
  lo, hi = stats.wilson_interval(n - errors, n)
  wrong = [i for i in np.flatnonzero(predicted != labels)][:32]
  records = [split.record(i) for i in wrong]
  _misclassified_png([r['image'] for r in records],
                     [f'{r["filename"].decode()}\ntrue: {_short(classes[labels[i]])}\n'
                      f'pred: {_short(classes[predicted[i]])} ({probs[i, predicted[i]]:.3f})'
                      for r, i in zip(records, wrong)], out / 'misclassified.png')
  _confusion_png(m, classes, out / 'confusion.png')
  figures = '![confusion](confusion.png)'
  if len(classes) == 2:
    _roc_png(labels, probs, classes, results['test_roc_auc'], out / 'roc.png')
    figures += ' ![roc](roc.png)'
  else:
    figures += (f'\n\nNo ROC curve for {len(classes)} classes: `roc_auc` is the mean of each class\'s '
                'area against the others (one-vs-rest macro average).')
  _curves(results['history'], out / 'curves.png')
  tested = {k[len('test_'):]: v for k, v in results.items() if k.startswith('test_') and isinstance(v, float)}
  lines = [f'# Report: {out.name}', '',
           f'**Test accuracy: {results["test_accuracy"]:.2%}** (95% CI {lo:.2%} to {hi:.2%}, Wilson), '
           f'{errors} errors out of {n} test images; test loss {results["test_loss"]:.4f}.', '',
           f'Checkpoint tested: step {results["tested_step"]}, epoch {results["tested_epoch"]}. Best epoch by '
           f'{results["config"]["best_by"]}: {results["best_epoch"]} (validation accuracy '
           f'{results["best_val_accuracy"]:.4f}, loss {results["best_val_loss"]:.4f}).', '',
           '## Test metrics', '', _table([{'metric': k, 'value': v} for k, v in tested.items()], ['metric', 'value']),
           '']
  if trials:
    lines += _search_section(results, trials, axes_names, out)
  columns = [c for c in results['history'][0] if len(classes) <= CURVE_CLASSES or not metrics.keyed(c)]
  lines += ['## Curves', '', _table(results['history'], columns), '',
            '![curves](curves.png)', '', *_confusion_section(m, classes), figures, '',
            f'## Misclassified test images ({errors})', '', '![misclassified](misclassified.png)', '']
  (out / 'report.md').write_text('\n'.join(lines))
