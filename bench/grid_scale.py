"""The CNN study's 16 trials (shrunk data, 2 epochs) three ways: (a) one job on all cores,
(b) 2 independent jobs sharing one workdir, each pinned to one core (`taskset`), and
(c) one job pinned to one core. Prints the wall times, their ratios, and checks that in (b)
every trial trained once and that the winner is the same.

    python -m bench.grid_scale [--pairs 250] [--epochs 2] [--difficulty 1]
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from bench.compare import ROOT


def job(workdir: pathlib.Path, common: list[str], cores: str | None = None, shard: str = '') -> subprocess.Popen:
  cmd = [sys.executable, str(ROOT / 'main.py'), '--config=configs/cnn_grid.py', f'--workdir={workdir}', *common,
         *([f'--config.shard={shard}'] if shard else [])]
  return subprocess.Popen((['taskset', '-c', cores] if cores else []) + cmd, cwd=ROOT, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(jobs: list[subprocess.Popen]) -> float:
  start = time.perf_counter()
  for j in jobs:
    _, err = j.communicate()
    if j.returncode:
      raise RuntimeError(err[-3000:])
  return time.perf_counter() - start


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=250)
  p.add_argument('--epochs', type=int, default=2)
  p.add_argument('--difficulty', type=float, default=1.0)
  a = p.parse_args()
  if not shutil.which('taskset') or (os.cpu_count() or 1) < 2:
    sys.exit('needs taskset and 2 cores')
  from comicface import build_dataset, synthetic  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(tempfile.mkdtemp(prefix='grid_scale_'))
  synthetic.write_dataset(root / 'source', a.pairs, size=256, difficulty=a.difficulty)
  build_dataset.build(str(root / 'source'), 'gray128', str(root / 'tfds'))  # built once, outside the timings
  common = [f'--config.dataset.manual_dir={root / "source"}', f'--config.dataset.data_dir={root / "tfds"}',
            f'--config.num_epochs={a.epochs}', '--config.retrain_splits=()', '--config.grid_parallel=sequential',
            '--config.log_every_steps=10000']
  seconds = {}
  seconds['(a) one job, both cores'] = timed([job(root / 'a', common)])
  seconds['(b) 2 jobs, one core each'] = timed([job(root / 'b', common, str(i), f'{i}/2') for i in range(2)])
  seconds['(c) one job, one core'] = timed([job(root / 'c', common, '0')])
  for name, s in seconds.items():
    print(f'{name:<28} {s:8.1f} s', flush=True)
  a_, b_, c_ = seconds.values()
  print(f'(b) against (c): {c_ / b_:.2f}x faster; (b) against (a): {a_ / b_:.2f}x')
  jobs = [json.loads(t.read_text())['trained_by']['job'] for t in (root / 'b' / 'trials').glob('*/trial.json')]
  print(f'(b): {len(jobs)} trials, trained by job 0: {sum(j[0] == 0 for j in jobs)}, by job 1: '
        f'{sum(j[0] == 1 for j in jobs)}')
  for k in 'abc':  # a different thread count sums in another order: a tie can break either way
    r = json.loads((root / k / 'results.json').read_text())
    print(f'({k}) winner {r["winner"]}: val accuracy {r["best_val_accuracy"]:.6f}, loss {r["best_val_loss"]:.6f}')


if __name__ == '__main__':
  main()
