"""The CNN study's 16 settings searched by successive halving instead of the full grid:
every setting trains 1 epoch, the best third go on to 3, the best third of those to 10
(rungs 1, 3, 10 for factor 3), each survivor with its own parameters and optimizer state.
The winner is retrained and tested as in cnn_grid.py.

On the real data: --config.dataset.manual_dir=PATH. `cnn_halving.py:runlocal` is a quick try.
"""
from configs import cnn_grid
from configs import common


def experiment():
  c = cnn_grid.experiment()
  c.search = 'halving'
  c.halving.factor, c.halving.min_epochs, c.halving.brackets = 3, 1, 1
  return c


get_config = common.variants(experiment, runlocal=cnn_grid.runlocal)
