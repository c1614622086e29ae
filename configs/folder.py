"""The CNN on a folder of class folders (config.dataset.name='folder'): any number of
classes, images of any size and format, resized to 64x64 RGB and built once into
array_record (tfds_builder/image_folder).

    DIR/<class>/<image>                                  validation and test carved from it
    DIR/train/<class>/, DIR/test/<class>/ [, DIR/validation/<class>/]   its own splits

Point it at yours with --config.dataset.manual_dir=DIR (the folder, or a .zip of it);
`folder.py:runlocal` generates a small 3-class stand-in in the workdir instead.
"""
from configs import common
from configs import default


def experiment():
  c = default.experiment()
  c.dataset.name = 'folder'
  c.dataset.manual_dir = '~/images'
  c.dataset.image_size, c.dataset.mode = 64, 'RGB'
  c.dataset.split_scheme = 'own'  # its own splits; those it lacks carved from train (validation_fraction, test_fraction)
  c.model.filters_1, c.model.filters_2 = 32, 32
  c.num_epochs = 10
  return c


def runlocal(c):
  common.runlocal(c)
  c.dataset.synthetic_classes, c.dataset.synthetic_pairs, c.dataset.synthetic_size = 3, 40, 48
  c.dataset.image_size = 32
  c.model.filters_1, c.model.filters_2 = 8, 8


get_config = common.variants(experiment, runlocal=runlocal)
