"""Fine-tuning (config.init): a run started from the model trained in another workdir."""
import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from comicface import configuration, errors, finetune, inference, synthetic, train
from comicface import workdir as workdirs
from conftest import tiny_config

HEAD = ('params/Dense_0/.*',)  # the CNN's head: its class count, and its input's size, differ


@pytest.fixture(scope='module')
def source(source_40, tmp_path_factory):
  """A tiny CNN trained for one epoch on the 2-class generated comic faces (grey, 128 px):
  its workdir and results."""
  workdir = str(tmp_path_factory.mktemp('source'))
  data = {'dataset.manual_dir': str(source_40), 'dataset.data_dir': str(tmp_path_factory.mktemp('data'))}
  return workdir, train.train_and_evaluate(tiny_config(num_epochs=1, **data), workdir)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """The dataset fields of the fine-tunes: a generated folder of 3 class folders, grey at 32 px."""
  root = synthetic.write_folder(tmp_path_factory.mktemp('folder'), classes=3, per_class=12, size=40)
  return {'dataset.name': 'folder', 'dataset.manual_dir': str(root), 'dataset.image_size': 32, 'dataset.mode': 'L',
          'dataset.split_scheme': 'own', 'dataset.data_dir': str(tmp_path_factory.mktemp('folder_data'))}


def finetune_config(source_dir, data, **overrides):
  return tiny_config(**{**data, 'init.workdir': source_dir, 'init.skip': HEAD, **overrides})


def leaves(state) -> dict:
  return {name: np.asarray(x) for name, x in finetune.named_leaves(jax.device_get(state)).items()}


def in_head(name: str) -> bool:
  return name.startswith('params/Dense_0/')


@pytest.mark.slow
def test_a_head_of_other_shapes_stops_with_one_message_naming_it(source, folder, tmp_path):
  """From 2 classes at 128 px to 3 at 32 px, without config.init.skip: the head does not fit."""
  source_dir, _ = source
  theirs = leaves(inference.load(source_dir).state)
  with pytest.raises(finetune.InitError) as error:
    train.setup(finetune_config(source_dir, folder, **{'init.skip': ()}), str(tmp_path))
  message = str(error.value)
  inputs = theirs['params/Dense_0/kernel'].shape[0]
  assert 'params/Dense_0/bias: (2,) in the source, (3,) in this model' in message
  fine_inputs = re.search(rf'params/Dense_0/kernel: \({inputs}, 2\) in the source, \((\d+), 3\) in this model',
                          message)
  assert fine_inputs and int(fine_inputs[1]) < inputs  # a smaller image
  assert "config.init.skip=('params/Dense_0/.*',)" in message
  assert 'params/stage_' not in message  # the convolutions fit


@pytest.mark.slow
def test_a_skipped_head_starts_fresh_and_the_rest_as_the_source(source, folder, tmp_path):
  """The fine-tune's first state: the source's convolutions, a fresh head for 3 classes,
  a fresh optimizer state at step 0; the source and its step recorded in the workdir."""
  source_dir, results = source
  config = finetune_config(source_dir, folder)
  run = train.setup(config, str(tmp_path))
  try:
    assert run.task.classes == ('class0', 'class1', 'class2') and run.step == run.epoch == 0
    mine = leaves(run.state)
    fresh_state = run.steps.init(jax.random.PRNGKey(config.seed))
    fresh = leaves(fresh_state)
    for a, b in zip(jax.tree.leaves(run.state['opt_state']) + [run.state['step']],
                    jax.tree.leaves(fresh_state['opt_state']) + [fresh_state['step']]):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  finally:
    run.close()
  theirs = leaves(inference.load(source_dir).state)
  assert sorted(mine) == sorted(fresh) and any(map(in_head, mine))
  for name, value in mine.items():
    if in_head(name):
      np.testing.assert_array_equal(value, fresh[name], err_msg=name)
    else:
      assert not np.array_equal(theirs[name], fresh[name])  # the premise: training moved it
      np.testing.assert_array_equal(value, theirs[name], err_msg=name)
  record = json.loads((tmp_path / finetune.INIT_FILE).read_text())
  assert record['workdir'] == str(pathlib.Path(source_dir).absolute()) and record['step'] == results['tested_step']
  assert record['skipped'] == sorted(filter(in_head, mine))


@pytest.mark.slow
def test_a_finetune_resumes_from_its_own_checkpoint_and_keeps_its_source(source, folder, tmp_path):
  """Trained one epoch of two, its source then gone: the rerun resumes from its own checkpoint.
  Its workdir records the source, and refuses another one."""
  source_dir = str(tmp_path / 'source')
  shutil.copytree(source[0], source_dir)
  workdir = str(tmp_path / 'finetune')
  first = train.train_and_evaluate(finetune_config(source_dir, folder, num_epochs=1), workdir)
  saved = leaves(inference.load(workdir).state)
  shutil.rmtree(source_dir)
  run = train.setup(finetune_config(source_dir, folder, num_epochs=2), workdir)
  try:
    assert run.step == first['tested_step'] > 0 and run.epoch == 1
    for name, value in leaves(run.state).items():
      np.testing.assert_array_equal(value, saved[name], err_msg=name)
  finally:
    run.close()
  record = json.loads((pathlib.Path(workdir) / finetune.INIT_FILE).read_text())
  assert record['workdir'] == source_dir and record['step'] == source[1]['tested_step']
  with pytest.raises(workdirs.WorkdirConflictError, match='init'):
    workdirs.check(finetune_config(source[0], folder), workdir)


@pytest.mark.slow
@pytest.mark.parametrize('case', ['untrained', 'own', 'step'])
def test_a_source_without_that_model_stops_with_one_message(source, folder, tmp_path, case):
  named = {'untrained': str(tmp_path), 'own': str(tmp_path), 'step': source[0]}[case]
  config = finetune_config(named, folder, **{'init.step': 999 if case == 'step' else 0})
  workdir = str(tmp_path) if case == 'own' else str(tmp_path / 'w')
  expected = {'untrained': 'holds no trained run', 'own': "this run's own workdir",
              'step': 'has no checkpoint at step 999'}[case]
  with pytest.raises(finetune.InitError, match=expected):
    train.setup(config, workdir)


@pytest.mark.slow
def test_each_member_of_a_stack_starts_from_the_source(source, folder, tmp_path):
  """Stacked trials (here two learning rates) each get the source's convolutions, and their own fresh head."""
  source_dir, _ = source
  configs = [finetune_config(source_dir, folder, learning_rate=lr) for lr in (1e-2, 3e-3)]
  members = [train.Member(f'lr{i}', str(tmp_path / f'lr{i}'), c, init_index=i) for i, c in enumerate(configs)]
  run = train.setup(configs[0], str(tmp_path), members)
  try:
    assert run.stacked
    states = [leaves(run.member_state(i)) for i in range(2)]
    fresh = leaves(run.steps.init(jax.numpy.stack([m.init_key for m in members])))  # each its own
  finally:
    run.close()
  theirs = leaves(inference.load(source_dir).state)
  for i, state in enumerate(states):
    for name, value in state.items():
      np.testing.assert_array_equal(value, fresh[name][i] if in_head(name) else theirs[name], err_msg=f'{i}: {name}')
    assert (tmp_path / f'lr{i}' / finetune.INIT_FILE).exists()
  assert not np.array_equal(states[0]['params/Dense_0/kernel'], states[1]['params/Dense_0/kernel'])


@pytest.mark.parametrize('overrides, field', [({'init.skip': ('params/(',)}, 'init.skip'),
                                              ({'init.workdir': '', 'init.step': 7}, 'init.workdir'),
                                              ({'init.step': -1}, 'init.step')])
def test_bad_init_fields_are_named(overrides, field):
  with pytest.raises(errors.ConfigError, match=rf'^config\.{field}='):
    configuration.validate(tiny_config(**{'init.workdir': 'runs/x', **overrides}))
