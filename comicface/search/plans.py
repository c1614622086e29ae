"""The plans of the searches: which trials to train, for how many epochs, in what order.
Each is a function of a `Search` that calls `search.train(trials, epochs, request)`, the
request a name of its own in the workdir's plan (jobs.py). `PLANS` holds them by the
names of `config.search`."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from comicface import checkpointing
from comicface import errors
from comicface import metrics
from comicface import search_space
from comicface.search.trials import Search, Trial


def grid(search: Search) -> None:
  search.train(search_space.expand(search.config), search.max_epochs, 'grid')


def random(search: Search) -> None:
  search.train(search_space.draws(search.config), search.max_epochs, 'random')


def rung_epochs(max_epochs: int, min_epochs: int, factor: int) -> list[int]:
  """The epochs at which successive halving compares its trials: the largest number of
  rungs K with min_epochs * factor^K <= max_epochs, spaced by `factor` down from max_epochs."""
  k = max(0, math.floor(math.log(max_epochs / min_epochs) / math.log(factor) + 1e-9))
  return [max(1, round(max_epochs / factor ** (k - i))) for i in range(k + 1)]


def halving(search: Search) -> None:
  """Successive halving of the candidates (one bracket), or Hyperband's brackets: bracket
  b starts its n_b draws at the rungs of s = s_max - b."""
  c = search.config
  h = c.halving
  full = rung_epochs(search.max_epochs, h.min_epochs, h.factor)
  for bracket in range(h.brackets):
    s = len(full) - 1 - bracket
    if s < 0:
      break
    rungs = full[bracket:]
    if h.brackets == 1:  # the grid's trials, or draws where the space has ranges
      alive = search_space.draws(c) if search_space.has_ranges(c) else search_space.expand(c)
    else:  # Hyperband: n_s = ceil((s_max + 1) / (s + 1) * factor^s) draws of its own
      n = math.ceil(len(full) / (s + 1) * h.factor ** s)
      alive = [search_space.draw(c, 1000 * (bracket + 1) + i, stream=bracket + 1) for i in range(n)]
    for i, epochs in enumerate(rungs):
      search.train(alive, epochs, f'bracket {bracket} rung {i}')
      ranked = sorted(alive, key=lambda t: checkpointing.rank(search.best(t, epochs), c.best_by), reverse=True)
      keep = len(ranked) if i == len(rungs) - 1 else max(1, len(ranked) // h.factor)
      search.rungs.append({'bracket': bracket, 'epochs': epochs, 'trials': [t.name for t in ranked],
                           'survivors': [t.name for t in ranked[:keep]]})
      alive = ranked[:keep]


def load_optuna():
  """Optuna, which config.search='bayesian' needs (ConfigError without it)."""
  try:
    import optuna  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError("config.search='bayesian' needs Optuna: pip install 'comicface[search]' "
                             "(or pip install optuna).") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def bayesian(search: Search) -> None:
  """TPE over the space, `config.bayesian_batch` trials a batch. Batch b's sampler is seeded
  with (seed, b) and told every earlier trial's best `config.best_by` (minimised where lower is
  better: `metrics.maximize`), so that the same config asks the same trials, and a resumed
  search asks what the first one did."""
  optuna = load_optuna()
  c = search.config
  space = search_space.space(c)

  def distribution(v):
    if isinstance(v, search_space.Range):
      if v.kind == 'int_uniform':
        return optuna.distributions.IntDistribution(int(v.low), int(v.high))
      return optuna.distributions.FloatDistribution(v.low, v.high, log=v.kind == 'log_uniform')
    return optuna.distributions.CategoricalDistribution(list(v))
  distributions = {k: distribution(v) for k, v in space.items()}
  asked: list[Trial] = []
  for batch in range(math.ceil(c.num_trials / c.bayesian_batch)):
    sampler = optuna.samplers.TPESampler(seed=int(np.random.SeedSequence([c.seed, batch]).generate_state(1)[0]),
                                         constant_liar=True, n_startup_trials=c.bayesian_batch)
    study = optuna.create_study(direction='maximize' if metrics.maximize(c.best_by) else 'minimize', sampler=sampler)
    for t in asked:
      study.add_trial(optuna.trial.create_trial(params=t.values, distributions=distributions,
                                                value=search.best(t)[c.best_by]))
    batch_trials = [search_space.trial(c, i, study.ask(distributions).params, search.max_epochs)
                    for i in range(batch * c.bayesian_batch, min(c.num_trials, (batch + 1) * c.bayesian_batch))]
    search.train(batch_trials, search.max_epochs, f'batch {batch}')
    asked += batch_trials


PLANS: dict[str, Callable[[Search], None]] = {'grid': grid, 'random': random, 'halving': halving,
                                              'bayesian': bayesian}
