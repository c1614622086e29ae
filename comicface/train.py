"""Training runs: a run (one model, or a stack of trials), its epochs, its test.

A run trains one or more members (trials, or seeds of trials) that differ only in
values, stacked on a trial axis where there are several. Each member keeps its own
checkpoints and history in its own folder, so a stack can shrink (a stopped trial,
a search's losers) and its survivors go on alone or in another stack.

`fit` trains a run's remaining epochs, calling its actions (actions.py) after each
block of steps and each epoch; `train_and_evaluate` is one whole run in a workdir.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from comicface import actions as actions_lib
from comicface import checkpointing
from comicface import errors
from comicface import feeds
from comicface import finetune
from comicface import input_pipeline
from comicface import logs
from comicface import metrics
from comicface import preemption
from comicface import report
from comicface import stats
from comicface import steps as steps_lib
from comicface import workdir as workdirs

Record = steps_lib.Record
StepsFactory = Callable[[int, int], steps_lib.Steps]  # (members, steps per epoch) -> their Steps
TASK_FILE = 'task.json'


def evaluate_split(steps: steps_lib.Steps, state: steps_lib.State, feed: feeds.Feed, classes: Sequence[str],
                   prefix: str) -> tuple[list[Record], np.ndarray]:
  """Every metric (metrics.py) of each member over every example of the feed's split
  exactly once, named `<prefix>_<metric>`; and the float64 class probabilities of each
  example (`metrics.probabilities`; [examples, classes], or [members, examples, classes]),
  in split order. The outputs stay on the devices until the last batch."""
  n = feed.split.num_examples
  log_probs = np.asarray(jax.device_get(jnp.concatenate(list(feed.eval_outputs(steps, state)), axis=-2)))
  log_probs = log_probs[..., :n, :]
  records = [metrics.compute(feed.labels, member, classes, prefix) for member in log_probs.reshape(-1, n, len(classes))]
  return records, metrics.probabilities(log_probs)


def open_feeds(config: ml_collections.ConfigDict, builder: Any, steps: steps_lib.Steps,
               *names: str | Sequence[str], evaluation: bool = True) -> list[feeds.Feed]:
  """The feeds of the splits `names` (each a split or several read as one), all resident
  or all streamed (`config.speed.feed`), in batches of `steps.eval_batch` for
  `evaluation`, else of `config.batch_size`."""
  batch = steps.eval_batch if evaluation else config.batch_size
  splits = [input_pipeline.open_split(builder, n, batch, config.dataset.split_scheme) for n in names]
  resident = feeds.resident(config.speed.feed, splits, input_pipeline.Task.of(builder).image_shape, steps)
  return [feeds.open_feed(s, steps, resident) for s in splits]


def write_task(workdir: str, task: input_pipeline.Task) -> None:
  """Records the task in the workdir (process 0), so that its models restore without the data."""
  path = pathlib.Path(workdir) / TASK_FILE
  if jax.process_index() == 0 and not path.exists():
    workdirs.write_json(path, dataclasses.asdict(task))


def read_task(workdir: str) -> input_pipeline.Task:
  record = json.loads((pathlib.Path(workdir) / TASK_FILE).read_text())
  return input_pipeline.Task(tuple(record['classes']), tuple(record['image_shape']))


@dataclasses.dataclass
class Member:
  """One model of a run: a trial (or one seed of it), its checkpoints and its history."""
  name: str
  folder: str
  config: ml_collections.ConfigDict
  init_index: int = 0  # its initial parameters: the config's seed folded with this (0: the seed alone)
  trial: str = ''  # the trial it is a seed of (early stopping decides on the trial's mean over seeds)
  manager: ocp.CheckpointManager | None = None
  history: list[Record] = dataclasses.field(default_factory=list)
  correct: list[str] = dataclasses.field(default_factory=list)  # per epoch: its right validation examples
  partial: dict | None = None  # the sums of an epoch cut short by a preemption save
  stopped: bool = False  # by early stopping
  saved_step: int = 0  # of its latest checkpoint
  pending: tuple | None = None  # its best epoch since then, on the host: (step, state, meta, metrics)

  @property
  def init_key(self) -> jax.Array:
    key = jax.random.PRNGKey(self.config.seed)
    return jax.random.fold_in(key, self.init_index) if self.init_index else key


@dataclasses.dataclass
class Run:
  """What one training run (of one model, or of a stack of members) works with."""
  config: ml_collections.ConfigDict  # the first member's
  builder: Any  # the built dataset (a tfds DatasetBuilder)
  steps: steps_lib.Steps
  state: steps_lib.State
  hparams: steps_lib.HParams
  train: feeds.Feed
  validation: feeds.Feed
  members: list[Member]
  make_steps: StepsFactory | None = None  # for `drop`
  step: int = 0  # the steps taken: counted here, so that the loop never asks the devices
  requests: actions_lib.Requests = actions_lib.Requests()  # what all processes take at this step (actions.Decide)
  log_steps: logs.LogSteps | None = None  # which calls end at a log step (set by `setup`)

  @property
  def stacked(self) -> bool:
    return self.steps.stacked

  @property
  def task(self) -> input_pipeline.Task:
    return input_pipeline.Task.of(self.builder)

  @property
  def steps_per_epoch(self) -> int:
    return self.train.split.num_examples // self.train.split.global_batch

  @property
  def epoch(self) -> int:
    """Epochs finished."""
    return len(self.members[0].history)

  @property
  def trial_names(self) -> list[str]:
    return [m.name for m in self.members]

  def member_state(self, i: int) -> steps_lib.State:
    return jax.tree.map(lambda x: x[i], self.state) if self.stacked else self.state

  def _meta(self, member: Member, partial: dict | None = None) -> dict:
    return {'history': list(member.history), 'correct': list(member.correct), 'partial': partial}

  def save(self, which: Sequence[int] | None = None, partial: steps_lib.Metrics | None = None) -> None:
    """Starts a checkpoint of the members `which` (default: all) at this step, with their
    histories (and `partial`, the current epoch's sums so far, where it is saved mid-epoch;
    at an epoch's end, its record, by which a member's manager keeps its best checkpoint
    beside the latest), each first writing its best epoch held on the host (`hold_best`)."""
    sums = partial and {k: np.atleast_1d(jax.device_get(v)) for k, v in partial.items()}
    for i in range(len(self.members)) if which is None else which:
      member = self.members[i]
      if member.pending and member.pending[0] < self.step:  # at this step, the state is saved below
        checkpointing.save(member.manager, *member.pending)
      member.pending = None
      record = checkpointing.metrics_of(member.history[-1]) if member.history and not sums else None
      checkpointing.save(member.manager, self.step, self.member_state(i),
                         self._meta(member, sums and {k: float(v[i]) for k, v in sums.items()}), record)
      member.saved_step = self.step

  def hold_best(self) -> None:
    """Keeps on the host the state of each member whose latest epoch ranks above its earlier
    ones (`checkpointing.rank`), to be written with its next checkpoint: so a run tests its
    best epoch however seldom it saves, and a resume, which replays the epochs since its
    last checkpoint exactly, finds that epoch again."""
    for i, member in enumerate(self.members):
      record = member.history[-1]
      rank = functools.partial(checkpointing.rank, by=member.config.best_by)
      if all(rank(record) > rank(r) for r in member.history[:-1]):
        member.pending = (self.step, jax.device_get(self.member_state(i)), self._meta(member),
                          checkpointing.metrics_of(record))

  def unsaved(self) -> list[int]:
    """The members whose latest step, or best epoch, is not yet in a checkpoint."""
    return [i for i, m in enumerate(self.members) if m.saved_step < self.step or m.pending]

  def drop(self, keep: Sequence[int]) -> None:
    """Leaves only the members `keep` in the stack (their states and values); the others'
    checkpoints are written, finished and closed."""
    gone = [i for i in range(len(self.members)) if i not in keep]
    self.save([i for i in self.unsaved() if i in gone])
    for i in gone:
      checkpointing.wait(self.members[i].manager)
      self.members[i].manager.close()
    self.members = [self.members[i] for i in keep]
    index = keep[0] if len(keep) == 1 else np.asarray(keep)  # one member alone is not a stack
    self.steps = self.make_steps(len(keep), self.steps_per_epoch)
    state, hparams = (jax.tree.map(lambda x: x[index], t) for t in (self.state, self.hparams))
    self.state = jax.device_put(state, self.steps.state_sharding)
    self.hparams = jax.device_put(hparams, self.steps.state_sharding)

  def close(self) -> None:
    for member in self.members:
      member.manager.close()


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def own_steps(config: ml_collections.ConfigDict, task: input_pipeline.Task) -> StepsFactory:
  """Steps of `config` for a stack of n members on all devices."""
  return lambda n, per_epoch: steps_lib.Steps(steps_lib.static_config(config), len(task.classes), task.image_shape,
                                              steps_lib.make_mesh(n), n > 1, steps_per_epoch=per_epoch)


def setup(config: ml_collections.ConfigDict, workdir: str, members: Sequence[Member] = (),
          make_steps: StepsFactory | None = None) -> Run:
  """Builds the data, the steps (by `make_steps`, given where runs of one static config
  share them; else `own_steps`) and the state of a run in `workdir` (the data and the
  task are kept there), each member resumed from its own latest checkpoint where it has
  one, else initialised from the model trained in `config.init.workdir` where it names
  one (`finetune`). Without `members`, the run is one model whose folder is the workdir;
  with several, they train as one stack and must differ only in values
  (`steps.hyperparameters`) and be at the same step."""
  builder = input_pipeline.prepare(config, workdir)
  task = input_pipeline.Task.of(builder)
  members = list(members) or [Member('', workdir, config)]
  stacked = len(members) > 1
  make_steps = make_steps or own_steps(config, task)
  train_split = input_pipeline.open_split(builder, config.train_splits, config.batch_size, config.dataset.split_scheme)
  if train_split.num_examples < config.batch_size:
    raise errors.ConfigError(f'config.batch_size={config.batch_size} is larger than the training set '
                             f'({train_split.num_examples} examples): lower it.')
  steps = make_steps(len(members), train_split.num_examples // config.batch_size)
  for member in members:
    write_task(member.folder, task)
  keys = [m.init_key for m in members]
  state = steps.init(jnp.stack(keys) if stacked else keys[0])
  hparams = steps.put_hparams([steps_lib.hyperparameters(m.config) for m in members])
  train, = open_feeds(config, builder, steps, config.train_splits, evaluation=False)
  validation, = open_feeds(config, builder, steps, 'validation')
  run = Run(config, builder, steps, state, hparams, train, validation, members, make_steps)
  for member in members:
    member.manager = checkpointing.manager(member.folder, member.config.keep_checkpoints, member.config.best_by)
  restored = checkpointing.restore_latest([m.manager for m in members],
                                          [run.member_state(i) for i in range(len(members))])
  if restored:
    for member, (_, meta) in zip(members, restored):
      member.history, member.correct, member.partial = meta['history'], meta['correct'], meta['partial']
    actions_lib.mark_stopped(members)
    trees = [tree for tree, _ in restored]
    run.state = jax.device_put(_stack(trees), steps.state_sharding) if stacked else trees[0]
    run.step = int(np.max(jax.device_get(run.state['step'])))
    for member in members:
      member.saved_step = run.step
    logging.info('%s: resumed from step %d (after epoch %d).', members[0].folder, run.step, run.epoch)
  elif config.init.workdir:
    run.state = finetune.initialise(run.state, config.init, [m.folder for m in members], stacked)
  run.log_steps = logs.LogSteps(config.log_every_steps, run.step)
  per_model = sum(x.size for x in jax.tree.leaves(run.member_state(0)['params']))
  logging.info('%s: %d parameters per model, %d member(s); %d train / %d validation examples, %s; %d step(s) '
               'per call.', workdir, per_model, len(members), train.split.num_examples,
               validation.split.num_examples, 'resident on the devices' if train.resident else 'streamed',
               steps.steps_per_call)
  return run


def train_epoch(run: Run, actions: Sequence[actions_lib.Action]) -> steps_lib.Metrics:
  """Trains the rest of the current epoch; returns its summed train metrics (on the devices)."""
  epoch, start = divmod(run.step, run.steps_per_epoch)
  partial = [m.partial for m in run.members]  # resumed mid-epoch: the sums so far, as if never stopped
  sums = run.steps.put_sums(partial if partial[0] else len(run.members))
  for member in run.members:
    member.partial = None
  for taken, call in run.train.train_calls(run.steps, run.config.seed, epoch, start):
    run.state, sums = call(run.state, run.hparams, sums)
    run.step += taken
    at_log = run.log_steps.due(run.step)
    for action in actions:
      action.after_steps(run, sums, at_log)
  return sums


def end_epoch(run: Run, sums: steps_lib.Metrics) -> list[Record]:
  """Validates every member; appends the epoch's record of each to its history."""
  validation, probs = evaluate_split(run.steps, run.state, run.validation, run.task.classes, 'val')
  records = [{'epoch': run.epoch + 1, 'step': run.step, **train, **val}
             for train, val in zip(steps_lib.summarize(sums, 'train'), validation)]
  right = probs.reshape(len(run.members), *probs.shape[-2:]).argmax(-1) == run.validation.labels
  for member, record, correct in zip(run.members, records, right):
    member.history.append(record)
    member.correct.append(stats.pack(correct))
  return records


def fit(run: Run, actions: Sequence[actions_lib.Action], until_epoch: int | None = None) -> bool:
  """Trains the run's members up to `until_epoch` (default: `run.config.num_epochs`); a
  member stopped early leaves the stack, and the run ends when none is left. Returns
  False if preempted (a checkpoint was saved)."""
  until = until_epoch or run.config.num_epochs
  try:
    while True:
      keep = [i for i, m in enumerate(run.members) if not m.stopped]
      if not keep or run.epoch >= until:
        break
      if len(keep) < len(run.members):
        run.drop(keep)
      records = end_epoch(run, train_epoch(run, actions))
      for action in actions:
        action.after_epoch(run, records)
    run.save(run.unsaved())
    for member in run.members:
      checkpointing.wait(member.manager)
  except preemption.Preempted:
    return False
  finally:
    for action in actions:
      action.close()
  return True


def test(run: Run, step: int) -> tuple[Record, input_pipeline.Split, np.ndarray]:
  """The test record of a single run's checkpoint `step`, the test split and its class
  probabilities."""
  test_feed, = open_feeds(run.config, run.builder, run.steps, 'test')
  state, _ = checkpointing.restore(run.members[0].manager, step, run.state)
  (record,), probs = evaluate_split(run.steps, state, test_feed, run.task.classes, 'test')
  return {**record, 'num_test_examples': test_feed.split.num_examples}, test_feed.split, probs


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       make_steps: StepsFactory | None = None) -> dict[str, Any] | None:
  """Trains `config` in `workdir` (resuming what is there), then tests the best
  (or, with `config.test_checkpoint='last'`, the last) checkpoint.

  Writes `results.json` and the report. A finished workdir is only reported, unless
  `config.num_epochs` is higher than it trained: then it continues from its last
  checkpoint (as a resume), and the best is selected and tested anew. A run stopped
  early (config.early_stopping) is finished where it stopped.
  Returns None if preempted (a checkpoint was saved; rerun to resume). `make_steps`: see `setup`.
  """
  workdirs.check(config, workdir)
  with preemption.handle_sigterm():  # from the start: SIGTERM also ends a wait for the workdir's hold
    try:
      with workdirs.Hold(workdir, wait=workdirs.TAKEOVER_SECONDS):
        workdirs.claim(config, workdir)
        return _train_and_evaluate(config, workdir, make_steps)
    except preemption.Preempted:  # raised by that wait, which said so
      return None


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        make_steps: StepsFactory | None) -> dict[str, Any] | None:
  results_path = pathlib.Path(workdir) / 'results.json'
  if results_path.exists():
    results = json.loads(results_path.read_text())
    trained = results['history'][-1]['epoch']
    if config.num_epochs <= trained or results.get('stopped_early'):
      logging.info('%s is finished: %d epochs trained%s, the config asks for %d, so nothing to train. '
                   'Test accuracy %.4f.', workdir, trained, ' (stopped early)' if results.get('stopped_early')
                   else '', config.num_epochs, results['test_accuracy'])
      return results
    logging.info('%s is finished at %d epochs; extending it to %d.', workdir, trained, config.num_epochs)
  run = setup(config, workdir, make_steps=make_steps)
  try:
    if not fit(run, actions_lib.standard(run)):
      logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
      return None
    manager = run.members[0].manager
    step = manager.latest_step() if config.test_checkpoint == 'last' else manager.best_step()
    test_record, test_split, probs = test(run, step)
  finally:
    run.close()
  member = run.members[0]
  tested = next(r for r in member.history if r['step'] == step)
  best = max(member.history, key=lambda r: checkpointing.rank(r, config.best_by))  # tested unless test_checkpoint='last'
  results = {**test_record, 'tested_step': step, 'tested_epoch': tested['epoch'], 'best_epoch': best['epoch'],
             'best_step': best['step'], 'best_val_accuracy': best['val_accuracy'], 'best_val_loss': best['val_loss'],
             'stopped_early': member.stopped, 'history': member.history, 'config': config.to_dict()}
  if jax.process_index() == 0:
    workdirs.write_json(results_path, results)
    np.save(pathlib.Path(workdir) / 'test_predictions.npy', probs)  # [example, class], test split order
    report.write(workdir, results, test_split, probs, read_task(workdir).classes)
  logging.info('Test accuracy of checkpoint step %d (epoch %d): %.4f on %d images.', step,
               results['tested_epoch'], results['test_accuracy'], results['num_test_examples'])
  return results
