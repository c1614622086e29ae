"""A search shared out over independent jobs in one workdir: every trial trains once, a
dead job rerun resumes its own trials, and the end equals the single job's."""
import json
import subprocess

import pytest

from comicface import search_space
from comicface.search import jobs
from configs import cnn_grid
from conftest import ROOT
from test_reliability import TINY, main_cmd, run_main

# A tiny grid of 4 trials (2 learning rates x 2 dropout rates), trial after trial.
GRID = ['--config=configs/cnn_grid.py:runlocal', *TINY[1:], '--config.num_epochs=2',
        '--config.grid.model.filters_1=(8,)', '--config.grid.model.filters_2=(4,)',
        '--config.grid_parallel=sequential']


@pytest.mark.parametrize('count', [1, 2, 3, 4, 5])
@pytest.mark.parametrize('mode', ['sequential', 'stacked'])
def test_the_shares_cover_every_trial_once_and_evenly(count, mode):
  trials = search_space.expand(cnn_grid.get_config())
  groups = search_space.groups(trials, mode)
  cost = lambda group: sum(t.config.model.filters_1 * (1 + t.config.model.filters_2) for t in group)
  shares = [jobs.assign(groups, i, count, cost) for i in range(count)]
  names = [t.name for share in shares for group in share for t in group]
  assert sorted(names) == sorted(t.name for t in trials)  # each once
  loads = [sum(map(cost, share)) for share in shares]
  assert max(loads) - min(loads) <= max(map(cost, groups))  # evenly, as far as whole groups allow
  assert shares == [jobs.assign(groups, i, count, cost) for i in range(count)]  # the same again


@pytest.mark.parametrize('env, shard', [
    ({}, (0, 1)),
    ({'SLURM_ARRAY_TASK_ID': '3', 'SLURM_ARRAY_TASK_COUNT': '4'}, (3, 4)),
    ({'SLURM_ARRAY_TASK_ID': '11', 'SLURM_ARRAY_TASK_MIN': '10', 'SLURM_ARRAY_TASK_COUNT': '2'}, (1, 2)),
    ({'JOB_COMPLETION_INDEX': '2', 'COMICFACE_SHARDS': '5'}, (2, 5)),
    ({'JOB_COMPLETION_INDEX': '2'}, (0, 1)),  # Kubernetes gives no count: COMICFACE_SHARDS does
    ({'TPU_WORKER_ID': '1', 'TPU_WORKER_HOSTNAMES': 'w-0,w-1,w-2,w-3'}, (1, 4)),
])
def test_the_shard_comes_from_the_launchers_variables(env, shard):
  config = cnn_grid.get_config()
  assert jobs.shard_of(config, env) == shard
  config.shard = '1/3'
  assert jobs.shard_of(config, env) == (1, 3)  # an explicit shard wins
  config.shard = ''
  assert jobs.shard_of(config, env) == (0, 1)


@pytest.fixture(scope='module')
def single_job(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('single')
  r = run_main(workdir, base=GRID)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads((workdir / 'results.json').read_text())


def _same_search(a: dict, b: dict) -> None:
  assert a['winner'] == b['winner'] and a['test_accuracy'] == b['test_accuracy']
  assert [t['trial'] for t in a['trials']] == [t['trial'] for t in b['trials']]
  for x, y in zip(a['trials'], b['trials']):
    assert x['val_accuracy'] == pytest.approx(y['val_accuracy']) and x['val_loss'] == pytest.approx(y['val_loss'])


@pytest.mark.slow
def test_two_jobs_share_a_search_and_end_as_one_job(tmp_path, single_job):
  """Each trains its own trials first (each held while trained), and both end with the results."""
  workdir = tmp_path / 'w'
  procs = [subprocess.Popen(main_cmd(workdir, f'--config.shard={i}/2', base=GRID), cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
  logs = [proc.communicate(timeout=600)[1] for proc in procs]
  assert [proc.returncode for proc in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
  records = [json.loads(p.read_text()) for p in (workdir / 'trials').glob('*/trial.json')]
  assert len(records) == 4 and all(len(r['history']) == 2 for r in records)  # every trial, trained once
  assert {tuple(r['trained_by']['job']) for r in records} == {(0, 2), (1, 2)}  # both jobs trained
  plan = json.loads((workdir / 'plan.json').read_text())
  assert plan['jobs'] == 2 and sorted(plan['requests']['grid'].values()) == [0, 0, 1, 1]
  _same_search(json.loads((workdir / 'results.json').read_text()), single_job)
