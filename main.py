"""Trains, evaluates or predicts with comicface. Intentionally kept short: flags, then one call.

  python main.py --config=configs/default.py --workdir=DIR [--config.learning_rate=1e-2]
  python main.py --config=configs/default.py --workdir=DIR --mode=evaluate [--split=test] [--step=N]
  python main.py --config=configs/default.py --workdir=DIR --mode=predict --images='photos/*.jpg'
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from comicface import host  # sets XLA flags for CPUs before JAX starts

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'predict'], 'What to do.')
flags.DEFINE_string('split', 'test', '--mode=evaluate: the split to evaluate.')
flags.DEFINE_integer('step', None, '--mode=evaluate: the checkpoint step (default: the best).')
flags.DEFINE_list('images', [], '--mode=predict: image paths or globs.')
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/default.py[:runlocal].',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from comicface import app as comicface_app  # pylint: disable=g-import-not-at-top
  return comicface_app.run(FLAGS.config, FLAGS.workdir, FLAGS.mode, split=FLAGS.split,
                           step=FLAGS.step, images=FLAGS.images)


if __name__ == '__main__':
  host.restart_with_huge_pages()
  app.run(main)
