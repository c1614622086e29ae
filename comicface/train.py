"""Training runs: a run (one model, or a stack of trials), its epochs, its test.

`fit` trains a run's remaining epochs, calling its actions (actions.py) after each
block of steps and each epoch; `train_and_evaluate` is one whole run in a workdir.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from comicface import actions as actions_lib
from comicface import checkpointing
from comicface import errors
from comicface import input_pipeline
from comicface import report
from comicface import steps as steps_lib
from comicface import workdir as workdirs

Record = steps_lib.Record
TASK_FILE = 'task.json'


def evaluate_split(steps: steps_lib.Steps, state: steps_lib.State, split: input_pipeline.Split,
                   prefix: str) -> tuple[list[Record], np.ndarray]:
  """Loss and accuracy per trial over every example of `split` exactly once (with the
  count of examples seen, across all processes), and the class probabilities of each
  example ([examples, classes], or [trials, examples, classes]), in split order."""
  sums, probs = None, []
  for batch in input_pipeline.eval_batches(split):
    s, p = steps.eval(state, steps.device_put(batch))
    sums = steps_lib.add(sums, s)
    probs.append(np.asarray(jax.device_get(p)))
  count = int(np.atleast_1d(jax.device_get(sums['count']))[0])
  records = [{**r, f'num_{prefix}_examples': count} for r in steps_lib.summarize(sums, prefix)]
  return records, np.concatenate(probs, axis=-2)[..., :split.num_examples, :]


def write_task(workdir: str, task: input_pipeline.Task) -> None:
  """Records the task in the workdir (process 0), so that its models restore without the data."""
  path = pathlib.Path(workdir) / TASK_FILE
  if jax.process_index() == 0 and not path.exists():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(task)))


def read_task(workdir: str) -> input_pipeline.Task:
  record = json.loads((pathlib.Path(workdir) / TASK_FILE).read_text())
  return input_pipeline.Task(tuple(record['classes']), tuple(record['image_shape']))


@dataclasses.dataclass
class Run:
  """What one training run (of one model, or of a stack of trials) works with."""
  config: ml_collections.ConfigDict  # the first trial's, for a stack
  workdir: str
  builder: Any  # the built dataset (a tfds DatasetBuilder)
  steps: steps_lib.Steps
  state: steps_lib.State
  hparams: steps_lib.HParams
  train: input_pipeline.Split
  validation: input_pipeline.Split
  manager: ocp.CheckpointManager
  trial_names: list[str]
  histories: list[list[Record]]
  partial: dict | None = None  # the current epoch's sums so far, restored from a mid-epoch save

  @property
  def steps_per_epoch(self) -> int:
    return self.train.num_examples // self.train.global_batch

  @property
  def step(self) -> int:
    return int(np.max(jax.device_get(self.state['step'])))

  @property
  def epoch(self) -> int:
    """Epochs finished."""
    return len(self.histories[0])

  def save(self, metrics: dict[str, float] | None = None, partial: steps_lib.Metrics | None = None) -> None:
    """Starts a checkpoint of the state at this step (with the histories, and `partial`,
    the current epoch's sums so far, where it is saved mid-epoch)."""
    meta = {'histories': self.histories,
            'partial': partial and {k: np.asarray(jax.device_get(v)).tolist() for k, v in partial.items()}}
    checkpointing.save(self.manager, self.step, self.state, meta, metrics=metrics)

  def restore(self, step: int) -> steps_lib.State:
    """The state of checkpoint `step`."""
    return checkpointing.restore(self.manager, step, self.state)[0]


def setup(config: ml_collections.ConfigDict, workdir: str,
          trials: Sequence[ml_collections.ConfigDict] = (), trial_names: Sequence[str] = (),
          steps: steps_lib.Steps | None = None) -> Run:
  """Builds the data, the steps (unless given: runs of one shape share them) and the state
  (resumed from `workdir` if it holds checkpoints) of a run; `trials` (with names) makes
  it a stack of trials that differ only in values (`steps.hyperparameters`)."""
  builder = input_pipeline.prepare(config, workdir)
  task = input_pipeline.Task.of(builder)
  write_task(workdir, task)
  configs = list(trials) or [config]
  if steps is None:
    steps = steps_lib.Steps(steps_lib.static_config(config), len(task.classes), task.image_shape,
                            steps_lib.make_mesh(len(trials) or 1), stacked=bool(trials))
  keys = [jax.random.PRNGKey(c.seed) for c in configs]
  state = steps.init(jnp.stack(keys) if trials else keys[0])
  hparams = steps.put_hparams([steps_lib.hyperparameters(c) for c in configs])
  scheme = config.dataset.split_scheme
  train = input_pipeline.open_split(builder, config.train_splits, config.batch_size, scheme)
  validation = input_pipeline.open_split(builder, 'validation', config.batch_size, scheme)
  if train.num_examples < config.batch_size:
    raise errors.ConfigError(f'config.batch_size={config.batch_size} is larger than the training set '
                             f'({train.num_examples} examples): lower it.')
  manager = checkpointing.manager(workdir, config.keep_checkpoints)
  names = list(trial_names) or ['']
  run = Run(config, workdir, builder, steps, state, hparams, train, validation, manager, names, [[] for _ in names])
  restored = checkpointing.restore_latest(manager, state)
  if restored:
    run.state, meta = restored
    run.histories, run.partial = meta['histories'], meta.get('partial')
    logging.info('%s: resumed from step %d (after epoch %d).', workdir, run.step, run.epoch)
  per_model = sum(x.size for x in jax.tree.leaves(state['params'])) // len(names)
  logging.info('%s: %d parameters per model, %d trial(s); %d train / %d validation examples.',
               workdir, per_model, len(names), train.num_examples, validation.num_examples)
  return run


def train_epoch(run: Run, actions: Sequence[actions_lib.Action]) -> steps_lib.Metrics:
  """Trains the rest of the current epoch; returns its summed train metrics."""
  epoch, start = divmod(run.step, run.steps_per_epoch)
  sums = run.partial and {k: jnp.asarray(v, jnp.float32) for k, v in run.partial.items()}
  run.partial = None
  for block in input_pipeline.train_batches(run.train, run.config.seed, epoch, start,
                                            run.config.speed.steps_per_call):
    run.state, metrics = run.steps.train(run.state, run.hparams, run.steps.device_put(block, block=True))
    sums = steps_lib.add(sums, metrics)
    for action in actions:
      action.after_steps(run, sums, len(block['label']))
  return sums


def end_epoch(run: Run, sums: steps_lib.Metrics) -> list[Record]:
  """Validates every trial; appends the epoch's record of each to `run.histories`."""
  validation, _ = evaluate_split(run.steps, run.state, run.validation, 'val')
  records = [{'epoch': run.epoch + 1, 'step': run.step, **train, 'val_loss': val['val_loss'],
              'val_accuracy': val['val_accuracy']}
             for train, val in zip(steps_lib.summarize(sums, 'train'), validation)]
  for history, record in zip(run.histories, records):
    history.append(record)
  return records


def fit(run: Run, actions: Sequence[actions_lib.Action]) -> bool:
  """Trains the run's remaining epochs, up to `run.config.num_epochs`. Returns False if
  preempted (a checkpoint was saved)."""
  try:
    while run.epoch < run.config.num_epochs:
      records = end_epoch(run, train_epoch(run, actions))
      for action in actions:
        action.after_epoch(run, records)
    checkpointing.wait(run.manager)
  except actions_lib.Preempted:
    return False
  finally:
    for action in actions:
      action.close()
  return True


def test(run: Run, step: int) -> tuple[Record, input_pipeline.Split, np.ndarray]:
  """The test record of checkpoint `step`, the test split and its class probabilities."""
  config = run.config
  split = input_pipeline.open_split(run.builder, 'test', config.batch_size, config.dataset.split_scheme)
  (record,), probs = evaluate_split(run.steps, run.restore(step), split, 'test')
  return record, split, probs


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       steps: steps_lib.Steps | None = None) -> dict[str, Any] | None:
  """Trains `config` in `workdir` (resuming what is there), then tests the best
  (or, with `config.test_checkpoint='last'`, the last) checkpoint.

  Writes `results.json` and the report. A finished workdir is only reported, unless
  `config.num_epochs` is higher than it trained: then it continues from its last
  checkpoint (as a resume), and the best is selected and tested anew.
  Returns None if preempted (a checkpoint was saved; rerun to resume). `steps`: see `setup`.
  """
  workdirs.check(config, workdir)
  with workdirs.Hold(workdir):
    workdirs.claim(config, workdir)
    return _train_and_evaluate(config, workdir, steps)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        steps: steps_lib.Steps | None) -> dict[str, Any] | None:
  results_path = pathlib.Path(workdir) / 'results.json'
  if results_path.exists():
    results = json.loads(results_path.read_text())
    trained = results['history'][-1]['epoch']
    if config.num_epochs <= trained:
      logging.info('%s is finished: %d epochs trained, the config asks for %d, so nothing to train. '
                   'Test accuracy %.4f.', workdir, trained, config.num_epochs, results['test_accuracy'])
      return results
    logging.info('%s is finished at %d epochs; extending it to %d.', workdir, trained, config.num_epochs)
  run = setup(config, workdir, steps=steps)
  try:
    if not fit(run, actions_lib.standard(run, [workdir])):
      logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
      return None
    step = run.manager.latest_step() if config.test_checkpoint == 'last' else run.manager.best_step()
    test_record, test_split, probs = test(run, step)
  finally:
    run.manager.close()
  history = run.histories[0]
  chosen = next(r for r in history if r['step'] == step)
  results = {**test_record, 'best_epoch': chosen['epoch'], 'best_step': step,
             'best_val_accuracy': chosen['val_accuracy'], 'best_val_loss': chosen['val_loss'],
             'history': history, 'config': config.to_dict()}
  if jax.process_index() == 0:
    results_path.write_text(json.dumps(results, indent=2))
    np.save(pathlib.Path(workdir) / 'test_predictions.npy', probs)  # [example, class], test split order
    report.write(workdir, results, test_split, probs, read_task(workdir).classes)
  logging.info('Test accuracy of checkpoint step %d (epoch %d): %.4f on %d images.', step,
               results['best_epoch'], results['test_accuracy'], results['num_test_examples'])
  return results
