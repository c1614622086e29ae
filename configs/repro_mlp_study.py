"""The MLP study's whole protocol, reproduced.

Data: each class folder sorted by file name; per class the first 5,000 train, the next
2,000 validation, the last 3,000 the holdout (`split_scheme='mlp_study'`; scaled to the
class size on smaller sets). 24x24 RGB, ImageNet mean/std, flattened to 1,728; MLP
1728-128-128-2 with ReLU, cross-entropy, batch 64, plain SGD as the text says
(`--config.optimizer=adam` for Adam), random horizontal flips as its code did. The grid
lr {1e-2, 1e-3} x epochs {1, 3, 5}; the winner is retrained on train + validation and
tested on the holdout. Reported: lr 1e-3, 3 epochs, 99.7%.

    python main.py --config=configs/repro_mlp_study.py --workdir=runs/repro_mlp \
        --config.dataset.manual_dir=~/Downloads/archive.zip
"""
from configs import common
from configs import mlp_grid


def experiment():
  c = mlp_grid.experiment()
  c.dataset.split_scheme = 'mlp_study'
  c.optimizer = 'sgd'
  c.augment = 'flip_lr'
  return c


get_config = common.variants(experiment, runlocal=common.runlocal)
