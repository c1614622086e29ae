"""Faults at scale cost nothing: a dead job does not hang a search, a failed restore
destroys nothing, a bad grid touches nothing, a hold survives clocks and requeues.
Each test checks that its fault landed where it says. docs/reliability.md lists them."""
import errno
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import pytest

from comicface import app, checkpointing, search_space
from comicface import workdir as workdirs
from comicface.search import jobs
from configs import cnn_halving
from conftest import ROOT, tiny_config
from test_reliability import TINY, main_cmd, run_main, wait_for

pytestmark = pytest.mark.slow  # each starts main.py or trains for seconds

# Successive halving of 4 trials (2 learning x 2 dropout rates), rungs at 2 and 4 epochs, trial after trial.
HALVING = ['--config=configs/cnn_halving.py', *TINY[1:], '--config.dataset.manual_dir=',
           '--config.dataset.synthetic_pairs=64', '--config.dataset.synthetic_size=128', '--config.num_epochs=4',
           '--config.halving.min_epochs=2', '--config.halving.factor=2', '--config.grid_parallel=sequential',
           '--config.grid.model.filters_1=(8,)', '--config.grid.model.filters_2=(4,)']
FAST_BEATS = {'COMICFACE_HEARTBEAT_SECONDS': '0.5'}


def digests(folder: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file() and p.name != workdirs.HOLD_FILE}


@pytest.fixture(scope='module')
def single_halving(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('single')
  r = run_main(workdir, base=HALVING)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads((workdir / 'results.json').read_text())


def test_a_job_killed_mid_rung_and_never_rerun_is_taken_over(tmp_path, single_halving):
  """kill -9 one of two jobs in the first rung, its trial half trained: the other job takes
  the trial over from its checkpoint, ends the search with the single job's results, and
  the dead job rerun later finds it done, training nothing."""
  workdir = tmp_path / 'w'
  procs = {i: subprocess.Popen(main_cmd(workdir, f'--config.shard={i}/2', base=HALVING), cwd=ROOT, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in (0, 1)}
  wait_for(procs[1], 'epoch 2/4 step')  # job 2 is in the second epoch of its first trial, the first saved
  owners = json.loads((workdir / 'plan.json').read_text())['requests']['bracket 0 rung 0']
  killed = next(name for name, job in owners.items() if job == 1)
  deadline = time.time() + 60
  while not any(p.name.isdigit() for p in (workdir / 'trials' / killed / 'checkpoints').glob('*')):
    assert time.time() < deadline
    time.sleep(0.05)
  procs[1].kill()
  procs[1].wait()
  assert procs[1].returncode == -9 and not (workdir / 'trials' / killed / 'trial.json').exists()  # mid-rung
  _, log = procs[0].communicate(timeout=600)
  assert procs[0].returncode == 0, log[-3000:]
  assert f'Taking over {workdir / "trials" / killed}' in log and 'resumed from step' in log
  out = json.loads((workdir / 'results.json').read_text())
  for key in ('winner', 'rungs', 'trial_epochs', 'test_accuracy'):
    assert out[key] == single_halving[key], key
  for a, b in zip(out['trials'], single_halving['trials']):
    assert a['trial'] == b['trial'] and a['epochs_trained'] == b['epochs_trained']
    assert a['val_accuracy'] == pytest.approx(b['val_accuracy']) and a['val_loss'] == pytest.approx(b['val_loss'])
  before = digests(workdir)
  rerun = run_main(workdir, '--config.shard=1/2', base=HALVING)
  assert rerun.returncode == 0 and ' step ' not in rerun.stderr, rerun.stderr[-3000:]
  assert digests(workdir) == before


def test_sigterm_ends_a_waiting_job_within_seconds_and_a_rerun_finishes(tmp_path):
  """Every trial held by a live process (this test's holds): the job waits, saying for what;
  SIGTERM ends it, exit 0, within 10 s; once the holds are gone a rerun trains and finishes."""
  workdir = tmp_path / 'w'
  config_flags = HALVING + ['--config.shard=0/2']
  config = cnn_halving.get_config()
  config.grid.model.filters_1, config.grid.model.filters_2 = (8,), (4,)
  trials = search_space.expand(config)  # the names of HALVING's trials
  holds = [workdirs.Hold(str(workdir / 'trials' / t.name)) for t in trials]
  for hold in holds:
    hold.__enter__()
  proc = subprocess.Popen(main_cmd(workdir, base=config_flags), cwd=ROOT, text=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  seen = wait_for(proc, 'waits for 4 trial(s) of other jobs')
  assert f'held by pid {os.getpid()}' in seen  # the wait is under way, naming the holder
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  _, rest = proc.communicate(timeout=60)
  assert proc.returncode == 0 and time.monotonic() - start < 10, rest[-2000:]
  assert 'Preempted' in rest and not (workdir / 'results.json').exists()
  for hold in holds:
    hold.__exit__(None, None, None)
  rerun = run_main(workdir, base=config_flags)
  assert rerun.returncode == 0 and (workdir / 'results.json').exists(), rerun.stderr[-3000:]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run of 2 epochs: its checkpoints at both epochs."""
  workdir = tmp_path_factory.mktemp('trained')
  config = tiny_config(num_epochs=2)
  assert app.run(config, str(workdir)) == 0
  return config, workdir


@pytest.mark.parametrize('error', [
    jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes.'),
    PermissionError(errno.EACCES, 'Permission denied'),
    OSError(errno.EIO, 'Input/output error'),
], ids=['out_of_memory', 'permission', 'io_error'])
def test_a_restore_failing_for_another_cause_keeps_every_checkpoint(trained, tmp_path, monkeypatch, capsys, error):
  """The latest checkpoint's restore fails (out of memory, permissions, I/O): one message naming
  the checkpoint and the cause, exit 1, every file left where it was."""
  config, original = trained
  workdir = tmp_path / 'w'
  shutil.copytree(original, workdir)
  (workdir / 'results.json').unlink()
  before = digests(workdir)
  latest = max(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  restore, calls = checkpointing.restore, []

  def failing(manager, step, target):
    calls.append(step)
    if step == latest:
      raise error
    return restore(manager, step, target)
  monkeypatch.setattr(checkpointing, 'restore', failing)
  assert app.run(config, str(workdir)) == 1
  assert calls == [latest]  # the fault landed on the latest checkpoint, and nothing else was tried
  err = capsys.readouterr().err
  message = [line for line in err.splitlines() if 'Error: ' in line]
  assert len(message) == 1 and message[0].startswith('CheckpointRestoreError: ') and 'Traceback' not in err
  assert f'Checkpoint {workdir / "checkpoints" / str(latest)} could not be read' in message[0]
  assert str(error) in message[0] and 'nothing was moved or deleted' in message[0]
  assert digests(workdir) == before


def test_a_different_job_count_is_refused(tmp_path, capsys):
  """A plan written by a job of 2; a job of 3 is refused with a message, before any work."""
  config = tiny_config()
  config.grid.learning_rate = (1e-2, 3e-3)
  config.shard = '0/2'
  jobs.Plan(tmp_path, (0, 2), config).check()
  before = digests(tmp_path)
  config.shard = '0/3'
  assert app.run(config, str(tmp_path)) == 1
  err = capsys.readouterr().err
  assert 'PlanMismatchError: ' in err and 'planned for 2 job(s)' in err and '--config.shard=i/2' in err
  assert digests(tmp_path) == before


def test_a_bad_grid_value_writes_nothing_and_the_corrected_command_runs(tmp_path):
  grid = ['--config=configs/cnn_grid.py:runlocal', *TINY[1:], '--config.num_epochs=1',
          '--config.grid.model.filters_2=(4,)', '--config.grid.model.dropout_rate=(0.5,)']
  workdir = tmp_path / 'w'
  bad = run_main(workdir, '--config.grid.model.filters_1=(8, -1)', base=grid)
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr
  assert 'ConfigError: config.grid makes a trial of model.dropout_rate=0.5, model.filters_1=-1, model.filters_2=4, ' \
         'which is invalid: config.model.filters_1=-1 is invalid: must be >= 1.' in bad.stderr
  assert not workdir.exists()  # neither the workdir nor the stand-in
  good = run_main(workdir, '--config.grid.model.filters_1=(8,)', base=grid)
  assert good.returncode == 0 and (workdir / 'results.json').exists(), good.stderr[-3000:]


def test_any_config_takes_a_grid_axis_by_override():
  """configs/resnet.py has no grid: --config.grid.learning_rate adds one, as the README says
  (main.py's own parsing, then the search's trials)."""
  script = ('import json, sys\nimport main\nfrom comicface import search_space\n'
            'main.parse_flags(sys.argv)\nsearch_space.validate(main.FLAGS.config)\n'
            'print(json.dumps([t.config.learning_rate for t in search_space.expand(main.FLAGS.config)]))\n')
  r = subprocess.run([sys.executable, '-c', script, '--config=configs/resnet.py', '--workdir=unused',
                      '--config.grid.learning_rate=(0.1, 0.01)'], capture_output=True, text=True, cwd=ROOT)
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.splitlines()[-1]) == [0.1, 0.01]


def test_a_requeued_run_waits_for_a_fresh_heartbeat_to_go_stale(tmp_path):
  """kill -9 a run, and leave its hold as a node that died would (another host, heartbeat
  fresh): the requeued run waits for the heartbeat to go stale, takes over, and finishes."""
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(main_cmd(workdir, '--config.num_epochs=2'), cwd=ROOT, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  wait_for(proc, ' step 3/')
  proc.kill()
  proc.wait()
  hold = workdir / workdirs.HOLD_FILE
  record = json.loads(hold.read_text())
  assert proc.returncode == -9 and record['pid'] == proc.pid  # the kill landed while it held the workdir
  hold.write_text(json.dumps({**record, 'host': 'another-node'}))  # fresh: just written
  r = run_main(workdir, '--config.num_epochs=2', env={'COMICFACE_HEARTBEAT_SECONDS': '3'})  # stale after 12 s
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'whose heartbeat is fresh: waiting' in r.stderr and 'Taking over' in r.stderr


def test_sigterm_ends_a_runs_wait_for_the_workdirs_hold(tmp_path):
  """A second process holds the workdir's lock, its heartbeat an hour old (a dead client's
  lease, or a holder not yet seen to beat): a run waits for it, up to 150 s; SIGTERM ends the
  wait at once, exit 0 with a line saying so, and the hold stays the holder's."""
  workdir = tmp_path / 'w'
  script = ('import sys, time\nfrom comicface import workdir\nworkdir.Hold(sys.argv[1]).__enter__()\n'
            'print("held", flush=True)\ntime.sleep(600)\n')
  holder = subprocess.Popen([sys.executable, '-c', script, str(workdir)], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            env={**os.environ, 'COMICFACE_HEARTBEAT_SECONDS': '1000'})  # it will not beat
  waiting = None
  try:
    assert holder.stdout.readline() == 'held\n'
    hold = workdir / workdirs.HOLD_FILE
    an_hour_ago = time.time() - 3600
    os.utime(hold, (an_hour_ago, an_hour_ago))
    waiting = subprocess.Popen(main_cmd(workdir), cwd=ROOT, text=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    seen = wait_for(waiting, 'waiting up to 150 s')
    assert f'held by pid {holder.pid}' in seen  # the premise: it waits for the second process
    waiting.send_signal(signal.SIGTERM)
    _, rest = waiting.communicate(timeout=60)  # well before the wait's end
    assert waiting.returncode == 0, (seen + rest)[-3000:]
    assert f'Stopped while waiting for the hold of {workdir} (SIGTERM)' in rest and 'Traceback' not in rest
    assert json.loads(hold.read_text())['pid'] == holder.pid and holder.poll() is None
    assert [p.name for p in workdir.iterdir()] == [workdirs.HOLD_FILE]  # nothing else was written
  finally:
    for proc in (holder, waiting):
      if proc:
        proc.kill()
        proc.wait()


def test_a_live_holder_on_another_host_is_refused_once_seen_to_beat(tmp_path, monkeypatch):
  monkeypatch.setattr(workdirs, 'HEARTBEAT_SECONDS', 0.2)
  hold = tmp_path / workdirs.HOLD_FILE
  hold.write_text(json.dumps({'host': 'another-node', 'pid': 1, 'started': 'then'}))
  stop = threading.Event()

  def beat():  # a live holder elsewhere, on a file system without shared locks
    while not stop.wait(0.2):
      os.utime(hold)
  threading.Thread(target=beat, daemon=True).start()
  start = time.monotonic()
  with pytest.raises(workdirs.WorkdirBusyError, match='pid 1 on another-node'):
    workdirs.Hold(str(tmp_path), wait=60).__enter__()
  stop.set()
  assert time.monotonic() - start < 5  # refused on the first beat seen, not at the deadline


def test_a_heartbeat_that_cannot_be_written_stops_the_run(tmp_path):
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(main_cmd(workdir, '--config.num_epochs=50', '--config.log_every_steps=20'), cwd=ROOT,
                          text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env={**os.environ, **FAST_BEATS})
  wait_for(proc, ' step 20/')
  (workdir / workdirs.HOLD_FILE).unlink()  # its heartbeat can no longer be written
  _, rest = proc.communicate(timeout=120)
  assert proc.returncode == 1 and 'HoldLostError: The heartbeat of' in rest and 'Traceback' not in rest
  assert any(p.name.isdigit() for p in (workdir / 'checkpoints').iterdir())  # its checkpoints are kept
