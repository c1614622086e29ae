"""The ResNet on CIFAR-10 from TFDS (config.dataset.name='cifar10'): 32x32 RGB, 10 classes,
its own train and test splits, 10% of train carved for validation (stratified, seeded).

It reads the dataset prepared as array_record in config.dataset.data_dir (default
~/tensorflow_datasets). Preparing it needs a download and TensorFlow: where both are at hand,

    pip install tensorflow-cpu
    tfds build cifar10 --file_format=array_record --data_dir=~/tensorflow_datasets

(or just run this config there: it prepares what is missing). Where they are not, a run stops
with one message naming what is missing and that command; copy a prepared data dir instead.
`cifar10.py:runlocal` trains a small ResNet on 2% of it for two epochs.
"""
import ml_collections

from configs import default
from configs import common


def experiment():
  c = default.experiment()
  c.dataset.name = 'cifar10'
  c.dataset.split_scheme = 'own'
  c.model = ml_collections.ConfigDict(dict(
      name='resnet', widths=(32, 64, 128), blocks_per_stage=2, input_scaling='unit'))
  c.optimizer, c.learning_rate, c.weight_decay = 'adamw', 2e-3, 0.05
  c.schedule, c.warmup_epochs = 'cosine', 1.0
  c.batch_size = 128
  c.num_epochs = 30
  c.log_every_steps = 100
  return c


def runlocal(c):
  c.dataset.splits = ml_collections.ConfigDict(
      {'train': 'train[:2%]', 'validation': 'train[98%:]', 'test': 'test[:2%]'})
  c.model.widths, c.model.blocks_per_stage = (8, 16), 1
  c.num_epochs, c.batch_size, c.log_every_steps = 2, 32, 5


get_config = common.variants(experiment, runlocal=runlocal)
