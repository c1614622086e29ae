"""What every config shares: variants after a colon (`configs/X.py:runlocal`), and the
generic part of `runlocal`."""
from typing import Callable

import ml_collections

Variant = Callable[[ml_collections.ConfigDict], None]


def variants(experiment: Callable[[], ml_collections.ConfigDict],
             **known: Variant) -> Callable[[str], ml_collections.ConfigDict]:
  """A `get_config(arg)` that builds `experiment()`, then applies the comma-separated
  variants named in `arg`, each once, in order."""
  def get_config(arg: str = '') -> ml_collections.ConfigDict:
    config = experiment()
    for name in filter(None, (arg or '').split(',')):
      if name not in known:
        raise ValueError(f'unknown config variant {name!r}; known: {sorted(known)}')
      known[name](config)
    return config
  return get_config


def runlocal(c: ml_collections.ConfigDict) -> None:
  """A run of seconds: a small generated stand-in, two epochs, small batches."""
  c.dataset.manual_dir = ''
  c.dataset.synthetic_pairs = 96
  c.dataset.synthetic_size = 128
  c.num_epochs = 2
  c.batch_size = 16
  c.log_every_steps = 5
