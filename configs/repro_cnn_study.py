"""The CNN study's whole protocol, reproduced.

Data: the first 4,000 images of each class (sorted by file name), shuffled, 80/20
train/test, 10% of train for validation: 5,760 / 640 / 1,600 (`split_scheme='cnn_study'`;
scaled to the class size on smaller sets). 128x128 grey, pixels / 255, Adam, batch 32,
cross-entropy. The 16-trial grid over filters_1 {100, 200} x filters_2 {25, 50} x
dropout {0.5, 0.7} x lr {1e-2, 1e-3}; the epoch count is read off the validation
curve (1..10); the winner is retrained on train for that many epochs and tested.
Reported: 100/50/0.5/1e-3, 4 epochs, 99.94% (1 error in 1,600).

    python main.py --config=configs/repro_cnn_study.py --workdir=runs/repro_cnn \
        --config.dataset.manual_dir=~/Downloads/archive.zip
"""
from configs import common
from configs import cnn_grid


def experiment():
  c = cnn_grid.experiment()
  c.dataset.split_scheme = 'cnn_study'
  c.num_epochs = 10
  return c


get_config = common.variants(experiment, runlocal=cnn_grid.runlocal)
