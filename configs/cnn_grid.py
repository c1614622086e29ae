"""The CNN study's grid: filters_1 {100, 200} x filters_2 {25, 50} x dropout {0.5, 0.7} x
lr {1e-2, 1e-3}, 16 trials; the epoch count is read off each trial's validation curve
(1..num_epochs), and the winner is retrained on train for that many epochs, then tested.

On the real data: --config.dataset.manual_dir=PATH. `cnn_grid.py:runlocal` is a quick try.
"""
from configs import cnn
from configs import common
from configs import default


def experiment():
  c = cnn.experiment()
  c.grid.model = dict(filters_1=(100, 200), filters_2=(25, 50), dropout_rate=(0.5, 0.7))
  c.grid.learning_rate = (1e-2, 1e-3)
  c.retrain_splits = ('train',)
  return c


def runlocal(c):
  default.runlocal(c)
  c.grid.model.filters_1, c.grid.model.filters_2 = (8, 16), (4, 8)
  c.num_epochs = 3


get_config = common.variants(experiment, runlocal=runlocal)
