"""Trains, evaluates or predicts with comicface. Intentionally kept short: flags, then one call.

  python main.py --config=configs/default.py --workdir=DIR [--config.learning_rate=1e-2]
  python main.py --workdir=DIR --mode=evaluate [--split=test|all] [--step=N] [--data=PATH]
  python main.py --workdir=DIR --mode=predict --images='photos/*.jpg'
  python main.py --workdir=DIR --mode=export
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from comicface import host  # sets XLA flags for CPUs before JAX starts

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'predict', 'export'], 'What to do.')
flags.DEFINE_string('split', 'test', "--mode=evaluate: the split to evaluate, or 'all'.")
flags.DEFINE_integer('step', None, '--mode=evaluate/predict/export: the checkpoint step (default: the tested one).')
flags.DEFINE_string('data', None, '--mode=evaluate: other data (a folder or zip in the v1/v2 layout).')
flags.DEFINE_string('data_dir', None, '--mode=evaluate: where --data is built '
                    '(default: $TFDS_DATA_DIR/comicface_eval/NAME).')
flags.DEFINE_list('images', [], '--mode=predict: image paths or globs.')
flags.DEFINE_bool('verbose', False, 'Show the traceback of expected errors too.')
GRID_FLAG = '--config.grid.'  # a grid axis, which any config takes (its grid is not locked): see parse_flags
_is_axis = lambda arg: arg.startswith(GRID_FLAG) and '=' in arg
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/default.py[:runlocal]; '
                                'optional for evaluate and predict (the workdir records it).',
                                lock_config=True, sys_argv=[a for a in sys.argv if not _is_axis(a)])
flags.mark_flags_as_required(['workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a message instead of a traceback for a bad --config.FIELD; then the
  grid axes (--config.grid.FIELD=VALUES), which any config takes."""
  try:
    rest = FLAGS([a for a in argv if not _is_axis(a)])
  except flags.Error as e:
    sys.exit(f'FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on flags.')
  except Exception as e:  # pylint: disable=broad-except  (ml_collections raises plain errors)
    sys.exit(f'FATAL Flags parsing error: {type(e).__name__}: {e}\n'
             'A --config.FIELD override names no field of the config, or gives it a value it cannot take.')
  axes = [a[len(GRID_FLAG):].split('=', 1) for a in argv if _is_axis(a)]
  if axes and FLAGS.config is None:
    sys.exit('FATAL Flags parsing error: --config.grid.FIELD needs --config=configs/NAME.py.')
  if axes:
    from comicface import configuration  # pylint: disable=g-import-not-at-top
    configuration.add_grid_axes(FLAGS.config, axes)
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from comicface import app as comicface_app  # pylint: disable=g-import-not-at-top
  return comicface_app.run(FLAGS.config, FLAGS.workdir, FLAGS.mode, split=FLAGS.split, step=FLAGS.step,
                           images=FLAGS.images, data=FLAGS.data, data_dir=FLAGS.data_dir,
                           verbose=FLAGS.verbose)


if __name__ == '__main__':
  host.restart_with_huge_pages()
  app.run(main, flags_parser=parse_flags)
