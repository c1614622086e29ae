"""Whole runs as a user launches them (`python main.py ...`), against their step alone and
against the studies' own code's whole runs.

    python -m bench.end_to_end [--cases mlp,tiny,cnn,demo] [--rounds 3] [--baseline /tmp/base] [--peers]

Each case runs `main.py` in a fresh workdir, in this checkout and (with --baseline) in
an earlier one, alternately (A B A B ...), and reads the epoch lines' timestamps:
- mlp: configs/mlp.py on a 3,000-pair stand-in (128 px), 8 epochs: images/s over epochs
  2-8 (training, validation, checkpoints: everything between the epoch lines), beside
  `bench.train_throughput`'s rate of the step alone (same tree, same round); with
  --peers also the MLP study's PyTorch loop on the same images (bench/peers/torch_mlp.py --whole);
- tiny: the same with `model.hidden=(8,)`, batch 32, one step per call: ms per step;
- cnn: configs/default.py on a 1,000-pair stand-in, 3 epochs (2-3 read); with --peers also the CNN
  study's Keras `model.fit` on the same images (bench/peers/keras_cnn.py --whole);
- demo: configs/default.py as `make demo` runs it: the whole command's seconds.
Prints the median of the rounds per tree and the ratios.
"""
import argparse
import datetime
import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

from bench.compare import PEERS, peer_python
from bench.search_time import export

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAIRS = {'mlp': 3000, 'tiny': 3000, 'cnn': 1000}  # the stand-in's size per case (128 px)
CASES = {  # the stand-in of mlp, tiny and cnn is given as --config.dataset.manual_dir
    'mlp': ['--config=configs/mlp.py', '--config.num_epochs=8'],
    'tiny': ['--config=configs/mlp.py', '--config.num_epochs=8', '--config.model.hidden=(8,)',
             '--config.batch_size=32', '--config.speed.steps_per_call=1'],
    'cnn': ['--config=configs/default.py', '--config.num_epochs=3', '--config.log_every_steps=100'],
    'demo': ['--config=configs/default.py'],
}
STEP = {'mlp': ['--model=mlp', '--batch=64', '--steps=300'], 'tiny': None,
        'cnn': ['--model=cnn', '--batch=32', '--steps=20']}
_EPOCH = re.compile(r'^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\] epoch (\d+): ')


def epoch_times(stderr: str) -> dict[int, float]:
  """Seconds (of the day) at which each epoch line was logged."""
  times = {}
  for line in stderr.splitlines():
    m = _EPOCH.match(line)
    if m:
      t = datetime.datetime.strptime(m.group(2), '%H:%M:%S.%f')
      times[int(m.group(3))] = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
  return times


def run_case(case: str, tree: pathlib.Path, data: pathlib.Path) -> dict[str, float]:
  """One run of `case` in `tree`, in a fresh workdir, on the stand-in in `data` (but demo)."""
  workdir = pathlib.Path(tempfile.mkdtemp(prefix=f'e2e_{case}_'))
  flags = CASES[case] + ([] if case == 'demo' else [f'--config.dataset.manual_dir={data / "source"}',
                                                      f'--config.dataset.data_dir={data / "tfds"}'])
  start = time.perf_counter()
  r = subprocess.run([sys.executable, 'main.py', f'--workdir={workdir}', *flags], cwd=tree,
                     capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if r.returncode:
    raise RuntimeError(f'{case} in {tree} failed:\n{r.stderr[-3000:]}')
  if case == 'demo':
    return {'seconds': seconds}
  results = json.loads((workdir / 'results.json').read_text())
  history, times = results['history'], epoch_times(r.stderr)
  last = len(history)
  steps = history[-1]['step'] - history[0]['step']
  elapsed = times[last] - times[1]
  batch = results['config']['batch_size']
  return {'img_s': steps * batch / elapsed, 'ms_per_step': 1e3 * elapsed / steps, 'seconds': seconds}


def step_rate(case: str, tree: pathlib.Path) -> float:
  """The step-only images/s of the case's model (bench.train_throughput, in `tree`)."""
  r = subprocess.run([sys.executable, '-m', 'bench.train_throughput', '--json', *STEP[case]], cwd=tree,
                     capture_output=True, text=True)
  if r.returncode:
    raise RuntimeError(r.stderr[-2000:])
  return json.loads(r.stdout.strip().splitlines()[-1])['train_img_s']


def peer_rate(case: str, data: pathlib.Path) -> float:
  """The study's own code's whole run on the same images and epochs: images/s over those after the first."""
  name, script, config = ('torch', 'torch_mlp.py', 'rgb24') if case == 'mlp' else ('keras', 'keras_cnn.py', 'gray128')
  arrays = data / f'{config}.npz'
  if not arrays.exists():
    export(data / 'tfds', data / 'source', arrays, config)
  r = subprocess.run([peer_python(name), str(PEERS / script), f'--whole={8 if case == "mlp" else 3}', f'--data={arrays}',
                      f'--batch={64 if case == "mlp" else 32}'], capture_output=True, text=True)
  if r.returncode:
    raise RuntimeError(r.stderr[-2000:])
  return json.loads(r.stdout.strip().splitlines()[-1])['train_img_s']


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--cases', default='mlp,tiny,cnn,demo')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--baseline', type=pathlib.Path, default=None, help='an earlier checkout, run alternately')
  p.add_argument('--peers', action='store_true', help="also the studies' own code (mlp: PyTorch, cnn: Keras)")
  a = p.parse_args()
  trees = {'project': ROOT, **({'baseline': a.baseline.resolve()} if a.baseline else {})}
  for case in a.cases.split(','):
    data = pathlib.Path(tempfile.gettempdir()) / f'e2e_standin_{PAIRS.get(case, 0)}'
    if case != 'demo' and not (data / 'source').exists():
      from comicface import synthetic  # pylint: disable=g-import-not-at-top
      synthetic.write_dataset(data / 'source', PAIRS[case], size=128)
    names = [*trees, *(['peer'] if a.peers and case in ('mlp', 'cnn') else [])]
    figures = {name: [] for name in names}
    for _ in range(a.rounds):
      for name in names:
        if name == 'peer':
          figure = {'img_s': peer_rate(case, data)}
        else:
          figure = run_case(case, trees[name], data)
          if STEP.get(case):
            figure['step_img_s'] = step_rate(case, trees[name])
        figures[name].append(figure)
        print(case, name, json.dumps(figure), flush=True)
    median = {name: {k: statistics.median(f[k] for f in fs) for k in fs[0]} for name, fs in figures.items()}
    for name, m in median.items():
      if case == 'demo':
        print(f'{case:5} {name:9} whole command {m["seconds"]:.1f} s')
      elif name == 'peer':
        print(f'{case:5} {name:9} epochs after the first: {m["img_s"]:,.0f} img/s; comicface / peer: '
              f'{median["project"]["img_s"] / m["img_s"]:.2f}x')
      else:
        step = (f'; step alone {m["step_img_s"]:,.0f} img/s: the run at {m["img_s"] / m["step_img_s"]:.2f}x of its '
                'step' if 'step_img_s' in m else '')
        print(f'{case:5} {name:9} epochs after the first: {m["img_s"]:,.0f} img/s, {m["ms_per_step"]:.3f} ms/step{step}')
    if a.baseline:
      if case == 'demo':
        ratio, what = median['baseline']['seconds'] / median['project']['seconds'], 'baseline time / project time'
      else:
        ratio, what = median['project']['img_s'] / median['baseline']['img_s'], 'project / baseline img/s'
      print(f'{case:5} {what}: {ratio:.2f}x (median of {a.rounds} alternating rounds)', flush=True)


if __name__ == '__main__':
  main()
