"""The MLP study's grid: lr {1e-2, 1e-3} x epochs {1, 3, 5}; the winner is retrained on
train + validation for its epoch count, then tested.

On the real data: --config.dataset.manual_dir=PATH. `mlp_grid.py:runlocal` is a quick try.
"""
from configs import common
from configs import mlp


def experiment():
  c = mlp.experiment()
  c.grid.learning_rate = (1e-2, 1e-3)
  c.grid.num_epochs = (1, 3, 5)
  c.retrain_splits = ('train', 'validation')
  return c


get_config = common.variants(experiment, runlocal=common.runlocal)
