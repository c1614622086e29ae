"""Reliability, for real: kill -9 and SIGTERM, corrupt checkpoints, NaN, several
processes, a full disk, and bad input of every kind. Nothing already written is lost."""
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, TINY_PAIRS

pytestmark = pytest.mark.slow  # each test starts main.py or trains for seconds

# The tiny run of conftest.tiny_config, as main.py flags.
TINY = ['--config=configs/default.py:runlocal', f'--config.dataset.synthetic_pairs={TINY_PAIRS}',
        '--config.model.filters_1=8', '--config.model.filters_2=4', '--config.learning_rate=0.01',
        '--config.batch_size=8', '--config.log_every_steps=1', '--config.checkpoint_seconds=0']


def main_cmd(workdir, *flags, base=TINY):
  """main.py on `workdir` with the config flags `base` (the tiny run), then `flags`."""
  return [sys.executable, str(ROOT / 'main.py'), f'--workdir={workdir}', *base, *flags]


def run_main(workdir, *flags, env=None, timeout=300, base=TINY):
  return subprocess.run(main_cmd(workdir, *flags, base=base), capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, **(env or {})}, timeout=timeout)


def final_params(workdir, step=None):
  """(step, state) of the last checkpoint (or of `step`), on this process's first device
  (whatever devices and processes wrote it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt = pathlib.Path(workdir) / 'checkpoints'
  last = step or max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as c:
    stored = c.metadata(ckpt / str(last) / 'state').item_metadata
    tree = c.restore(ckpt / str(last) / 'state',
                     jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), stored))
  return last, tree


def assert_same_params(a, b, step=None):
  """The last checkpoints (or those of `step`) of two workdirs hold bitwise equal states."""
  import jax  # pylint: disable=g-import-not-at-top
  (step_a, ta), (step_b, tb) = final_params(a, step), final_params(b, step)
  assert step_a == step_b
  flat_a, flat_b = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (ta, tb))
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b] and len(flat_a) > 5
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """An uninterrupted 3-epoch run: the reference."""
  workdir = tmp_path_factory.mktemp('straight')
  r = run_main(workdir, '--config.num_epochs=3')
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def wait_for(proc: subprocess.Popen, text: str) -> str:
  """Reads `proc`'s stderr up to the line holding `text`; returns what it read."""
  seen = ''
  while text not in seen:
    line = proc.stderr.readline()
    assert line, f'the run ended before printing {text!r}:\n{seen[-3000:]}'
    seen += line
  return seen


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_kill_9_anywhere_then_resume_is_bitwise_exact(straight, tmp_path, seed):
  """kill -9 at a seeded step of the run (mid-epoch or at an epoch's end, mid-save), then the
  same command: the end is bitwise the uninterrupted run's."""
  total = json.loads((straight / 'results.json').read_text())['history'][-1]['step']
  chance = random.Random(seed)
  at = chance.randrange(1, total)
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(main_cmd(workdir, '--config.num_epochs=3'), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  wait_for(proc, f' step {at}/{total} ')
  time.sleep(chance.uniform(0.0, 0.2))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL and not (workdir / 'results.json').exists()  # the kill took
  r = run_main(workdir, '--config.num_epochs=3')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'resident on the devices' in r.stderr  # the premise: the default feed keeps the data there
  assert 'Taking over' in r.stderr and 'from a run that ended without releasing it' in r.stderr
  assert_same_params(workdir, straight)
  a, b = (json.loads((d / 'results.json').read_text()) for d in (workdir, straight))
  assert a['test_accuracy'] == b['test_accuracy'] and a['test_loss'] == b['test_loss']
  assert a['history'] == b['history']


def test_kill_9_after_epochs_without_a_checkpoint_replays_them_exactly(straight, tmp_path):
  """A run checkpointed after its first epoch, extended with checkpoint_seconds that no
  epoch reaches (its best epoch held on the host, unwritten), killed in its last epoch:
  the rerun replays the epochs since that checkpoint and ends bitwise the uninterrupted run."""
  workdir = tmp_path / 'w'
  assert run_main(workdir, '--config.num_epochs=1').returncode == 0
  history = json.loads((straight / 'results.json').read_text())['history']
  flags = ('--config.num_epochs=3', '--config.checkpoint_seconds=1000')
  proc = subprocess.Popen(main_cmd(workdir, *flags), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  wait_for(proc, f' step {history[1]["step"] + 2}/')  # in the third epoch
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]
  assert saved == [history[0]['step']]  # the premise: nothing written since the first epoch
  r = run_main(workdir, *flags)
  assert r.returncode == 0 and f'resumed from step {history[0]["step"]}' in r.stderr, r.stderr[-3000:]
  assert_same_params(workdir, straight)
  a, b = (json.loads((d / 'results.json').read_text()) for d in (workdir, straight))
  assert a['history'] == b['history'] and a['test_accuracy'] == b['test_accuracy']
  assert a['tested_step'] == b['tested_step']


def test_sigterm_saves_mid_epoch_and_exits_0(straight, tmp_path):
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(main_cmd(workdir, '--config.num_epochs=3'), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  seen = wait_for(proc, ' step 3/')  # training has begun
  proc.send_signal(signal.SIGTERM)
  _, rest = proc.communicate(timeout=120)
  assert proc.returncode == 0, (seen + rest)[-3000:]
  assert 'SIGTERM received' in seen + rest
  steps = [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]
  assert steps and not (workdir / 'results.json').exists()
  r = run_main(workdir, '--config.num_epochs=3')
  assert r.returncode == 0 and 'resumed from step' in r.stderr
  assert_same_params(workdir, straight)


def test_corrupt_latest_checkpoint_falls_back_to_previous(straight, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(straight, workdir)
  (workdir / 'results.json').unlink()
  latest = max(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  data = sorted((workdir / 'checkpoints' / str(latest) / 'state').rglob('d/*'),
                key=lambda p: p.stat().st_size)[-1]
  data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # truncated
  r = run_main(workdir, '--config.num_epochs=3')
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'Checkpoint {workdir / "checkpoints" / str(latest)} is damaged' in r.stderr
  assert (workdir / 'checkpoints' / f'corrupt-{latest}').exists()  # moved aside, not deleted
  assert_same_params(workdir, straight)  # the previous epoch was retrained to the same end


def test_nan_loss_stops_naming_step_and_keeps_good_checkpoints(tmp_path):
  workdir = tmp_path / 'w'
  r = run_main(workdir, '--config.num_epochs=3', '--config.optimizer=sgd', '--config.learning_rate=1e35')
  assert r.returncode != 0
  assert 'NonFiniteLossError: train_loss is nan at step' in r.stderr or (
      'NonFiniteLossError: train_loss is inf at step' in r.stderr)
  steps = [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()] if (
      workdir / 'checkpoints').exists() else []
  assert not steps  # nothing with NaN was saved


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# Run as process 1 of two: main.py with a clock that runs a million times fast for the
# checkpoint interval (actions.Decide), so that it asks for a checkpoint at every epoch's end
# while process 0's never reaches config.checkpoint_seconds.
FAST_CLOCK = """
import runpy, sys, time, types
from comicface import actions
real = time.monotonic
actions.time = types.SimpleNamespace(monotonic=lambda: real() * 1e6)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def start_two(workdir, *flags, fast_clock: bool = False) -> list[subprocess.Popen]:
  """main.py as 2 processes x 2 CPU devices over loopback on `workdir` (process 1's clock
  fast, if asked)."""
  port = _free_port()
  commands = [main_cmd(workdir, *flags) for _ in range(2)]
  if fast_clock:
    commands[1][1:1] = ['-c', FAST_CLOCK]
  return [subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
                                'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}', 'JAX_NUM_PROCESSES': '2',
                                'JAX_PROCESS_ID': str(i)})
          for i, command in enumerate(commands)]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
  """Each process's stderr, once both have exited 0."""
  outs = [p.communicate(timeout=timeout)[1] for p in procs]
  for p, err in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


@pytest.fixture(scope='module')
def two(tmp_path_factory):
  """An uninterrupted 3-epoch run of 2 processes whose clocks disagree: process 1 asks
  for a checkpoint at every epoch's end, process 0 never; they must agree, or hang."""
  workdir = tmp_path_factory.mktemp('two')
  outs = finish(start_two(workdir, '--config.num_epochs=3', '--config.checkpoint_seconds=1000', fast_clock=True))
  return workdir, outs


def test_two_processes_whose_clocks_disagree_save_together(two):
  workdir, outs = two
  assert 'Process 0 takes what another process asked' in outs[0]  # the premise: the clocks disagreed
  results = json.loads((workdir / 'results.json').read_text())
  assert len(results['history']) == 3
  saved = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved[0] < results['history'][-1]['step']  # checkpoints before the run's end: process 1's clock
  assert (workdir / 'checkpoints' / str(saved[0]) / 'state' / 'ocdbt.process_1').exists()  # both wrote it


def test_two_processes_match_one_process(two, tmp_path):
  """2 processes x 2 CPU devices over loopback == 1 process x 4 devices."""
  one = tmp_path / 'one'
  r = run_main(one, '--config.num_epochs=3', env={'XLA_FLAGS': '--xla_force_host_platform_device_count=4'})
  assert r.returncode == 0, r.stderr[-3000:]
  a, b = (json.loads((d / 'results.json').read_text()) for d in (one, two[0]))
  test_pairs = a['num_test_examples']
  assert b['num_test_examples'] == test_pairs  # every test example counted once, across processes
  for ra, rb in zip(a['history'], b['history']):
    assert ra == pytest.approx(rb, rel=1e-4, abs=1e-5)
  assert b['test_accuracy'] == pytest.approx(a['test_accuracy'])
  outs = two[1]
  assert 'img/s ETA' in outs[0] and 'img/s ETA' not in outs[1]  # process 0 alone logs
  assert 'resident on the devices' in outs[0] and 'resident on the devices' in r.stderr  # both runs' feed


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(two, tmp_path):
  """SIGTERM to process 1 alone, mid-run: both save one checkpoint at the same step and exit
  0 within a minute; rerun, they end with the uninterrupted run's history and parameters."""
  workdir = tmp_path / 'w'
  flags = ('--config.num_epochs=3', '--config.checkpoint_seconds=1000')
  procs = start_two(workdir, *flags)
  seen = wait_for(procs[0], ' step 3/')  # training has begun
  procs[1].send_signal(signal.SIGTERM)
  signalled = time.monotonic()
  outs = finish(procs, timeout=120)
  assert time.monotonic() - signalled < 60
  assert 'SIGTERM received' in outs[1] and 'SIGTERM received' not in seen + outs[0]  # it reached one process
  assert not (workdir / 'results.json').exists()
  saved = max(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert (workdir / 'checkpoints' / str(saved) / 'state' / 'ocdbt.process_1').exists()  # one save, by both
  finish(start_two(workdir, *flags))
  a, b = (json.loads((d / 'results.json').read_text()) for d in (workdir, two[0]))
  assert a['history'] == b['history'] and a['test_accuracy'] == b['test_accuracy']
  assert_same_params(workdir, two[0])


def test_nan_midway_keeps_the_last_good_checkpoint(tmp_path):
  """Parameters that blow up in epoch 2 stop the run before anything replaces epoch 1's checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  from comicface import actions, checkpointing, train  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  run = train.setup(tiny_config(num_epochs=1), str(tmp_path))
  assert train.fit(run, actions.standard(run))
  good = run.members[0].manager.all_steps()
  template = run.state
  run.config = tiny_config(num_epochs=2)
  run.state = {**run.state, 'params': jax.tree.map(lambda x: x * np.inf, run.state['params'])}
  with pytest.raises(actions.NonFiniteLossError, match=r'train_loss is nan at step \d+'):
    train.fit(run, actions.standard(run))
  run.close()
  manager = checkpointing.manager(str(tmp_path), 2, 'val_accuracy')
  assert manager.all_steps() == good
  tree, _ = checkpointing.restore(manager, good[-1], template)
  manager.close()
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree['params']))


def test_extending_a_finished_run_equals_a_straight_run(straight, tmp_path):
  """2 epochs, then the same command with 3: bitwise the 3-epoch run; 3 or fewer again: only reported."""
  workdir = tmp_path / 'w'
  assert run_main(workdir, '--config.num_epochs=2').returncode == 0
  r = run_main(workdir, '--config.num_epochs=3')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'is finished at 2 epochs; extending it to 3' in r.stderr
  assert_same_params(workdir, straight)
  a, b = (json.loads((d / 'results.json').read_text()) for d in (workdir, straight))
  assert a['history'] == b['history'] and a['test_accuracy'] == b['test_accuracy']
  assert a['best_step'] == b['best_step']
  for epochs in (3, 1):
    r = run_main(workdir, f'--config.num_epochs={epochs}')
    assert r.returncode == 0 and f'3 epochs trained, the config asks for {epochs}, so nothing to train' in r.stderr
  assert json.loads((workdir / 'results.json').read_text()) == a


@pytest.mark.parametrize('flags, error', [
    (['--config.learning_rate=-0.1'], 'ConfigError: config.learning_rate=-0.1 is invalid'),
    (['--config.model.filters_1=6', '--mode=evaluate'], 'WorkdirConflictError: '),
    (['--mode=evaluate', '--step=12345'], 'NoCheckpointError: '),
], ids=['bad_config', 'conflicting_workdir', 'no_such_checkpoint'])
def test_expected_errors_print_one_message_and_no_traceback(straight, flags, error):
  before = sorted(p.name for p in straight.iterdir())
  r = run_main(straight, *flags, timeout=120)
  assert r.returncode == 1 and error in r.stderr and 'Traceback' not in r.stderr, r.stderr[-3000:]
  assert sorted(p.name for p in straight.iterdir()) == before  # nothing written


def test_a_wrong_dataset_folder_is_one_message(tmp_path):
  r = run_main(tmp_path / 'w', '--config.dataset.manual_dir=/no/such/folder', timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr
  assert 'LayoutError: /no/such/folder does not exist. Expected a folder holding comics/' in r.stderr


@pytest.mark.parametrize('flags, error', [
    ([], 'ConfigError: --mode=train needs --config'),
    (['--mode=evaluate'], 'NoRunError: '),
])
def test_errors_without_a_config_or_a_run(tmp_path, flags, error):
  r = run_main(tmp_path / 'nothing', *flags, base=[], timeout=120)
  assert r.returncode == 1 and error in r.stderr and 'Traceback' not in r.stderr, r.stderr[-3000:]
  verbose = run_main(tmp_path / 'nothing', *flags, '--verbose', base=[], timeout=120)
  assert verbose.returncode != 0 and 'Traceback' in verbose.stderr and error in verbose.stderr


def test_a_damaged_build_is_rebuilt_from_its_source(straight, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(straight, workdir)
  (workdir / 'results.json').unlink()
  shard = next(workdir.rglob('comic_faces-train.array_record-*'))
  data = bytearray(shard.read_bytes())
  data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # a damaged block
  shard.write_bytes(bytes(data))
  r = run_main(workdir, '--config.num_epochs=3')
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'The build in {shard.parent} is damaged ({shard.name} changed since it was written' in r.stderr
  assert list(shard.parent.parent.glob('1.0.0.damaged-*'))  # set aside, not deleted
  assert_same_params(workdir, straight)
  assert json.loads((workdir / 'results.json').read_text())['test_accuracy'] == json.loads(
      (straight / 'results.json').read_text())['test_accuracy']


def test_two_runs_on_one_workdir_exactly_one_trains(tmp_path):
  workdir = tmp_path / 'w'
  first = subprocess.Popen(main_cmd(workdir, '--config.num_epochs=50', '--config.log_every_steps=100'),
                           cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  seen = wait_for(first, ' step 100/')  # the first run is training (in its epoch 20 of 50)
  second = run_main(workdir, '--config.num_epochs=50', timeout=120)
  assert first.poll() is None and not (workdir / 'results.json').exists()  # the first still held it
  assert second.returncode == 1 and 'Traceback' not in second.stderr and ' step ' not in second.stderr
  assert f'WorkdirBusyError: {workdir} is in use by another run: pid {first.pid} on ' in second.stderr
  first.send_signal(signal.SIGTERM)  # the first saves and stops
  _, rest = first.communicate(timeout=300)
  assert first.returncode == 0 and 'SIGTERM received' in rest, (seen + rest)[-3000:]


def test_a_first_save_cut_short_in_a_stack_is_deleted_on_resume(tmp_path):
  """Two members of a stack, a kill after the first's first checkpoint and before the
  second's: the resume starts fresh, and the lone checkpoint is deleted, so that training
  writes it again."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from comicface import checkpointing  # pylint: disable=g-import-not-at-top
  managers = [checkpointing.manager(str(tmp_path / name), 2, 'val_accuracy') for name in ('a', 'b')]
  state = {'w': jnp.ones(3)}
  checkpointing.save(managers[0], 12, state, {'history': []})
  checkpointing.wait(managers[0])
  assert managers[0].all_steps() == [12] and not managers[1].all_steps()  # the premise: one member saved
  assert checkpointing.restore_latest(managers, [state, state]) is None
  assert not managers[0].all_steps()
  checkpointing.save(managers[0], 12, state, {'history': []})  # trained again: written again
  checkpointing.wait(managers[0])
  assert managers[0].all_steps() == [12]
  for manager in managers:
    manager.close()
