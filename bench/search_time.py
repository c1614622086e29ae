"""comicface's grid and successive halving against keras-tuner's GridSearch and Hyperband,
in one invocation, on the same generated images: the CNN study's space, the hard stand-in.

    python -m bench.search_time [--pairs 750] [--epochs 10] [--factor 3] [--only 'comicface halving,...']

Each search picks the best (trial, epoch) on validation and tests that model as trained
(comicface: --config.retrain_splits='()'; keras-tuner: its best model). Prints, per search,
the wall time of its whole command (start-up, search, test, and comicface's report; for
keras-tuner also its `tuner.search()` alone), the trial-epochs spent, the winner and its test accuracy with the 95% interval.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.compare import PEERS, ROOT, peer_python
from comicface import stats


def export(build_root: pathlib.Path, source: pathlib.Path, out: pathlib.Path, config: str = 'gray128') -> None:
  """The built splits (of `config`) as uint8 arrays for a peer: the very images comicface trains on."""
  from comicface import build_dataset  # pylint: disable=g-import-not-at-top
  builder = build_dataset.build(str(source), config, str(build_root))
  arrays = {}
  for split, name in (('train', 'train'), ('validation', 'val'), ('test', 'test')):
    records = list(builder.as_data_source(split))
    arrays[f'x_{name}'] = np.stack([r['image'] for r in records])
    arrays[f'y_{name}'] = np.asarray([r['label'] for r in records], np.int32)
  np.savez(out, **arrays)


SEARCHES = ('comicface halving', 'comicface grid', 'keras-tuner hyperband', 'keras-tuner grid')


def timed(cmd: list[str], cwd: pathlib.Path) -> tuple[float, str]:
  """The wall time of the whole command, and its standard output."""
  start = time.perf_counter()
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
  if r.returncode:
    raise RuntimeError(r.stderr[-3000:])
  return time.perf_counter() - start, r.stdout


def comicface(kind: str, workdir: pathlib.Path, source: pathlib.Path, data_dir: pathlib.Path, a) -> dict:
  cmd = [sys.executable, str(ROOT / 'main.py'), '--config=configs/cnn_grid.py', f'--workdir={workdir}',
         f'--config.dataset.manual_dir={source}', f'--config.dataset.data_dir={data_dir}',
         f'--config.num_epochs={a.epochs}', '--config.retrain_splits=()', f'--config.search={kind}',
         f'--config.halving.factor={a.factor}', '--config.log_every_steps=1000']
  seconds, _ = timed(cmd, ROOT)
  results = json.loads((workdir / 'results.json').read_text())
  return {'seconds': seconds, 'trial_epochs': results['trial_epochs'],
          'trials': len(results['trials']), 'winner': results['chosen'], 'test_accuracy': results['test_accuracy'],
          'num_test': results['num_test_examples']}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=750)
  p.add_argument('--epochs', type=int, default=10)
  p.add_argument('--factor', type=int, default=3)
  p.add_argument('--difficulty', type=float, default=1.0)
  p.add_argument('--only', default='', help="some of the searches, by name: 'comicface halving,keras-tuner hyperband'")
  a = p.parse_args()
  wanted = [s.strip() for s in a.only.split(',') if s.strip()]
  if set(wanted) - set(SEARCHES):
    sys.exit(f'--only: no search named {sorted(set(wanted) - set(SEARCHES))}; the searches: {list(SEARCHES)}')
  from comicface import synthetic  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(tempfile.mkdtemp(prefix='search_time_'))
  source = root / 'source'
  synthetic.write_dataset(source, a.pairs, size=256, difficulty=a.difficulty)
  export(root / 'tfds', source, root / 'data.npz')
  n = len(np.load(root / 'data.npz')['y_train'])
  print(f'{n} training images, {a.epochs} epochs at most, halving factor {a.factor}, difficulty {a.difficulty}',
        flush=True)
  searches = [(f'comicface {k}', lambda k=k: comicface(k, root / k, source, root / 'tfds', a))
              for k in ('halving', 'grid')]
  for tuner in ('hyperband', 'grid'):
    def run(tuner=tuner):
      cmd = [peer_python('keras'), str(PEERS / 'keras_tuner_search.py'), f'--data={root / "data.npz"}',
             f'--tuner={tuner}', f'--max_epochs={a.epochs}', f'--factor={a.factor}']
      seconds, out = timed(cmd, PEERS)
      peer = json.loads(out.strip().splitlines()[-1])  # its own 'seconds': tuner.search() alone
      return {**peer, 'search_seconds': peer['seconds'], 'seconds': seconds}
    searches.append((f'keras-tuner {tuner}', run))
  searches = [(name, s) for name, s in searches if not wanted or name in wanted]
  print(f'{"search":<24} {"seconds":>9} {"search()":>9} {"trials":>7} {"trial-epochs":>13} '
        f'{"test accuracy (95% CI)":>28}  winner', flush=True)
  for name, search in searches:
    r = search()
    right = round(r['test_accuracy'] * r['num_test'])
    lo, hi = stats.wilson_interval(right, r['num_test'])
    search_only = f'{r["search_seconds"]:.1f}' if 'search_seconds' in r else '-'
    print(f'{name:<24} {r["seconds"]:>9.1f} {search_only:>9} {r["trials"]:>7} {r["trial_epochs"]:>13} '
          f'{r["test_accuracy"]:>10.4f} ({lo:.4f}-{hi:.4f})  {r["winner"]}', flush=True)


if __name__ == '__main__':
  main()
