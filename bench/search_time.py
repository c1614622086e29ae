"""comicface's grid and successive halving against keras-tuner's GridSearch and Hyperband,
in one invocation, on the same generated images: the CNN study's space, the hard stand-in.

    python -m bench.search_time [--pairs 750] [--epochs 10] [--factor 3] [--only comicface]

Each search picks the best (trial, epoch) on validation and tests that model as trained
(comicface: --config.retrain_splits='()'; keras-tuner: its best model). Prints, per search,
wall time, trial-epochs spent, the winner and its test accuracy with the 95% interval.
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


def export(build_root: pathlib.Path, source: pathlib.Path, out: pathlib.Path) -> None:
  """The built splits (gray128) as uint8 arrays for the peer: the very images comicface trains on."""
  from comicface import build_dataset  # pylint: disable=g-import-not-at-top
  builder = build_dataset.build(str(source), 'gray128', str(build_root))
  arrays = {}
  for split, name in (('train', 'train'), ('validation', 'val'), ('test', 'test')):
    records = list(builder.as_data_source(split))
    arrays[f'x_{name}'] = np.stack([r['image'] for r in records])
    arrays[f'y_{name}'] = np.asarray([r['label'] for r in records], np.int32)
  np.savez(out, **arrays)


def comicface(kind: str, workdir: pathlib.Path, source: pathlib.Path, data_dir: pathlib.Path, a) -> dict:
  cmd = [sys.executable, str(ROOT / 'main.py'), '--config=configs/cnn_grid.py', f'--workdir={workdir}',
         f'--config.dataset.manual_dir={source}', f'--config.dataset.data_dir={data_dir}',
         f'--config.num_epochs={a.epochs}', '--config.retrain_splits=()', f'--config.search={kind}',
         f'--config.halving.factor={a.factor}', '--config.log_every_steps=1000']
  start = time.perf_counter()
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
  if r.returncode:
    raise RuntimeError(r.stderr[-3000:])
  results = json.loads((workdir / 'results.json').read_text())
  return {'seconds': time.perf_counter() - start, 'trial_epochs': results['trial_epochs'],
          'trials': len(results['trials']), 'winner': results['chosen'], 'test_accuracy': results['test_accuracy'],
          'num_test': results['num_test_examples']}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=750)
  p.add_argument('--epochs', type=int, default=10)
  p.add_argument('--factor', type=int, default=3)
  p.add_argument('--difficulty', type=float, default=1.0)
  p.add_argument('--only', default='', help="'comicface' or 'keras-tuner': one side only")
  a = p.parse_args()
  from comicface import synthetic  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(tempfile.mkdtemp(prefix='search_time_'))
  source = root / 'source'
  synthetic.write_dataset(source, a.pairs, size=256, difficulty=a.difficulty)
  export(root / 'tfds', source, root / 'data.npz')
  n = len(np.load(root / 'data.npz')['y_train'])
  print(f'{n} training images, {a.epochs} epochs at most, halving factor {a.factor}, difficulty {a.difficulty}',
        flush=True)
  searches = []
  if a.only != 'keras-tuner':
    searches += [(f'comicface {k}', lambda k=k: comicface(k, root / k, source, root / 'tfds', a))
                 for k in ('halving', 'grid')]
  if a.only != 'comicface':
    keras = peer_python('keras')
    for tuner in ('hyperband', 'grid'):
      def run(tuner=tuner):
        cmd = [keras, str(PEERS / 'keras_tuner_search.py'), f'--data={root / "data.npz"}', f'--tuner={tuner}',
               f'--max_epochs={a.epochs}', f'--factor={a.factor}']
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=PEERS)
        if r.returncode:
          raise RuntimeError(r.stderr[-3000:])
        return json.loads(r.stdout.strip().splitlines()[-1])
      searches.append((f'keras-tuner {tuner}', run))
  print(f'{"search":<24} {"seconds":>9} {"trials":>7} {"trial-epochs":>13} {"test accuracy (95% CI)":>28}  winner',
        flush=True)
  for name, search in searches:
    r = search()
    right = round(r['test_accuracy'] * r['num_test'])
    lo, hi = stats.wilson_interval(right, r['num_test'])
    print(f'{name:<24} {r["seconds"]:>9.1f} {r["trials"]:>7} {r["trial_epochs"]:>13} '
          f'{r["test_accuracy"]:>10.4f} ({lo:.4f}-{hi:.4f})  {r["winner"]}', flush=True)


if __name__ == '__main__':
  main()
