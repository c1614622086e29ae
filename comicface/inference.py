"""A trained model restored from its workdir: predict images, evaluate on any data.

    model = comicface.load('runs/cnn')            # a run, or a search's tested winner
    model.predict(['a.jpg', pixels])              # class probabilities, one row per image
    model.evaluate(data='~/Downloads/v1.zip', split='all')

`--mode=predict` and `--mode=evaluate` call the same code.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import pathlib
import re
import shutil
from typing import Any, Iterator, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from comicface import build_dataset
from comicface import checkpointing
from comicface import errors
from comicface import imaging
from comicface import input_pipeline
from comicface import models
from comicface import preprocess
from comicface import report
from comicface import stats
from comicface import steps as steps_lib
from comicface import train
from comicface import workdir as workdirs

ALL = 'all'  # --split=all: every example of the data
SHOWN = 5  # --mode=predict prints every class's probability up to this many classes, else the top ones
EXPORT_PLATFORMS = ('cpu', 'cuda', 'tpu')


class NoCheckpointError(errors.UserError, FileNotFoundError):
  """The workdir holds no checkpoint to restore."""


class ClassesError(errors.UserError, ValueError):
  """Data to evaluate a model on has other classes than the model's."""


def trained_run(workdir: str) -> tuple[str, ml_collections.ConfigDict, str | None, int | None]:
  """(folder, config, winning trial or None, tested step or None) of the model that
  training in `workdir` made, as its results.json says: the workdir itself for a run (an
  unfinished one has no tested step yet); for a search, its tested winner (`final/`, or
  the winner's own folder where it was tested as trained)."""
  config = workdirs.recorded_config(workdir)
  path = pathlib.Path(workdir) / 'results.json'
  results = json.loads(path.read_text()) if path.exists() else None
  tested = results and results.get('tested_step', results.get('best_step'))  # best_step: an earlier release
  if not config.grid:
    return workdir, config, None, tested
  if not results:
    raise NoCheckpointError(f'{workdir} holds a search that has not finished: rerun its training command '
                            '(the same, without --mode) to finish it.')
  folder = str(pathlib.Path(workdir) / results['model_folder'])
  return folder, workdirs.recorded_config(folder), results['winner'], tested


def load(workdir: str, config: ml_collections.ConfigDict | None = None, step: int | None = None) -> Model:
  """The model trained in `workdir` (the checkpoint its results.json says it tested, or `step`).

  `config` (optional) must agree with the recorded one on what defines the
  checkpoints; the recorded config is what is used.
  """
  if config is not None:
    workdirs.check(config, workdir)
  folder, run_config, trial, tested = trained_run(workdir)
  task = train.read_task(folder)
  steps = steps_lib.Steps(steps_lib.static_config(run_config), len(task.classes), task.image_shape,
                          steps_lib.make_mesh())
  state = steps.init(jax.random.PRNGKey(run_config.seed))
  manager = checkpointing.manager(folder, run_config.keep_checkpoints, run_config.best_by)
  try:
    available = manager.all_steps()
    if not available:
      raise NoCheckpointError(f'{folder} holds no checkpoint: train there first '
                              '(the same command without --mode).')
    if tested is None:  # an unfinished run: what it would test now
      tested = manager.latest_step() if run_config.test_checkpoint == 'last' else manager.best_step()
      logging.info('%s has not finished training: restoring its checkpoint step %d.', folder, tested)
    chosen = tested if step is None else step
    if chosen not in available:
      raise NoCheckpointError(f'{folder} has no checkpoint at step {chosen}; it has {sorted(available)}.')
    state, _ = checkpointing.restore(manager, chosen, state)
  finally:
    manager.close()
  if trial:
    logging.info('%s: the search winner %s (%s, checkpoint step %d).', workdir, trial, folder, chosen)
  return Model(workdir, folder, run_config, task, steps, state, chosen, chosen == tested, trial)


@dataclasses.dataclass
class Model:
  """A restored model: `predict` images, `evaluate` data."""
  workdir: str
  folder: str  # where its checkpoints are (the workdir, or a search's tested winner's)
  config: ml_collections.ConfigDict
  task: input_pipeline.Task
  steps: steps_lib.Steps
  state: steps_lib.State
  step: int
  tested_step: bool  # whether `step` is the checkpoint that training tested
  trial: str | None = None  # the search's winning trial

  @property
  def classes(self) -> tuple[str, ...]:
    return self.task.classes

  def top(self, probs: np.ndarray) -> list[tuple[str, float]]:
    """(class, probability) of one image's `probs`, as --mode=predict prints them: every class
    in class order up to SHOWN classes, else the SHOWN most probable, most probable first."""
    order = range(len(probs)) if len(probs) <= SHOWN else np.argsort(-probs, kind='stable')[:SHOWN]
    return [(self.classes[i], float(probs[i])) for i in order]

  def _probabilities(self, pixels: list[np.ndarray]) -> np.ndarray:
    """(n, classes) probabilities of decoded images, in batches of a fixed shape (one compile)."""
    batch = self.config.batch_size
    out = []
    for start in range(0, len(pixels), batch):
      chunk = pixels[start:start + batch]
      x = np.stack(chunk + [chunk[0]] * (batch - len(chunk)))
      probs = self.steps.predict(self.state, jax.device_put(x, self.steps.data))
      out.append(np.asarray(multihost_utils.process_allgather(probs, tiled=True))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

  def _decode(self, image: imaging.Source) -> np.ndarray:
    try:
      return imaging.load_image(image, self.task.image_shape[0], self.task.image_mode)
    except imaging.ImageError as e:
      raise imaging.ImageError(f'{_describe(image)}: {e}') from e

  def predict(self, images: Sequence[imaging.Source]) -> np.ndarray:
    """Class probabilities (columns: `classes`) of image files, encoded bytes or uint8
    arrays, decoded and resized by the dataset builder's own function. A bad image
    raises ImageError naming it."""
    return self._probabilities([self._decode(image) for image in images])

  def predict_files(self, paths: Sequence[str]) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """(path, probabilities, None) per readable file and (path, None, why) per other one,
    in order; `predict` of the readable ones, a batch at a time."""
    for start in range(0, len(paths), self.config.batch_size):
      done, good = {}, []
      for path in paths[start:start + self.config.batch_size]:
        try:
          if pathlib.Path(path).is_dir():
            raise imaging.ImageError('is a directory')
          good.append((path, self._decode(path)))
        except (imaging.ImageError, OSError) as e:
          done[path] = str(e)
      probs = dict(zip((p for p, _ in good), self._probabilities([x for _, x in good])))
      for path in paths[start:start + self.config.batch_size]:
        yield (path, probs[path], None) if path in probs else (path, None, done[path])

  def export(self) -> pathlib.Path:
    """Writes the model to `WORKDIR/export/`, for use with JAX alone: `model.jax`, a
    `jax.export` artifact lowered for CPU, CUDA and TPU (uint8 images [any batch, height,
    width, channels] in, class probabilities [batch, classes] out; Flax's own layers, the
    parameters inside), `preprocess.py`: the very file that decodes and resizes images for
    the builder and `predict` (numpy and Pillow only), and `model.json`: the classes, the
    image size and mode, and how to call them. Returns the folder."""
    model = models.create(self.config.model.to_dict(), len(self.classes), self.config.dtype)
    state = jax.device_get(self.state)
    probabilities = lambda images: jax.nn.softmax(steps_lib.apply_model(model, state, images)[0])
    batch, = jax.export.symbolic_shape('batch')
    exported = jax.export.export(jax.jit(probabilities), platforms=EXPORT_PLATFORMS)(
        jax.ShapeDtypeStruct((batch, *self.task.image_shape), np.uint8))
    out = pathlib.Path(self.workdir) / 'export'
    if jax.process_index() == 0:
      out.mkdir(exist_ok=True)
      (out / 'model.jax').write_bytes(exported.serialize())
      shutil.copyfile(preprocess.__file__, out / 'preprocess.py')
      size, mode = self.task.image_shape[0], self.task.image_mode
      workdirs.write_json(out / 'model.json', {
          'call': "jax.export.deserialize(open('model.jax', 'rb').read()).call(images)",
          'input': {'shape': ['batch', *self.task.image_shape], 'dtype': 'uint8'},
          'output': {'shape': ['batch', len(self.classes)], 'dtype': 'float32', 'columns': list(self.classes)},
          'classes': list(self.classes), 'image_size': size, 'image_mode': mode,
          'preprocessing': (f"images = np.stack([preprocess.load_image(path, {size}, '{mode}') for path in paths]) "
                            '(preprocess.py, beside this file: numpy and Pillow; the pixels of --mode=predict). '
                            'The model scales the pixels itself.'),
          'platforms': list(EXPORT_PLATFORMS), 'jax_version': jax.__version__, 'workdir': self.workdir,
          'trial': self.trial, 'step': self.step})
    return out

  def _read_other_data(self, ds: ml_collections.ConfigDict, source: pathlib.Path) -> str:
    """Sets config.dataset `ds` to read the data at `source` as the model's images: comic_faces'
    layout for a model of comic_faces, else a folder of class folders, at the model's image size
    and mode, split as a folder of its own is. Returns the name of its build: the folder's name and
    its source's fingerprint. A folder whose classes are not the model's raises ClassesError."""
    if input_pipeline.kind(ds.name) != 'comic_faces':
      ds.name, ds.split_scheme, ds.splits = input_pipeline.FOLDER, 'own', {}
      ds.image_size, ds.mode = self.task.image_shape[0], self.task.image_mode
    ds.manual_dir = str(source)
    classes = input_pipeline.Task.of_config(ds).classes
    if classes != self.classes:
      raise ClassesError(f'{source} holds the classes {list(classes)}; the model in {self.folder} tells apart '
                         f'{list(self.classes)}: give a folder of a subfolder for each of those, named so that they '
                         'sort in that order.')
    return f'{re.sub(r"[^A-Za-z0-9_.]+", "_", source.name)}-{input_pipeline.source_fingerprint(ds, source)[:8]}'

  def evaluate(self, data: str | None = None, split: str = 'test', data_dir: str | None = None) -> dict[str, Any]:
    """Every metric (metrics.py; accuracy and loss also on their own), the accuracy's 95%
    interval, errors and confusion matrix on `split` ('all': every example) of the run's
    own data, or of `data` (a folder or zip: for a model of comic_faces, in its v1 or v2
    layout; else a folder of the model's class folders, `_read_other_data`), built into a
    data dir of its own. Writes `evaluations/<data>-<split>.json` in the workdir, and changes
    nothing else there."""
    config, name, splits_dir = ml_collections.ConfigDict(self.config.to_dict()), 'own', self.folder
    if data:
      name = self._read_other_data(config.dataset, pathlib.Path(data).expanduser().absolute())
      config.dataset.data_dir = data_dir or str(build_dataset.default_data_dir() / 'comicface_eval' / name)
      splits_dir = config.dataset.data_dir  # where a folder's carved splits are recorded: not the workdir
    builder = input_pipeline.prepare(config, splits_dir)
    splits = ['train', 'validation', 'test'] if split == ALL else split
    feed, = train.open_feeds(config, builder, self.steps, splits)
    (record,), probs = train.evaluate_split(self.steps, self.state, feed, self.classes, 'eval')
    matrix = report.confusion(feed.labels, probs.argmax(-1), len(self.classes))
    n, wrong = int(matrix.sum()), int(matrix.sum() - np.trace(matrix))
    results = {'data': data or 'own', 'data_dir': str(builder.data_dir), 'split': split, 'step': self.step,
               'trial': self.trial, 'num_examples': n, 'accuracy': record['eval_accuracy'],
               'loss': record['eval_loss'], 'accuracy_95ci': list(stats.wilson_interval(n - wrong, n)),
               'metrics': {k[len('eval_'):]: v for k, v in record.items()},
               'errors': wrong, 'classes': list(self.classes), 'confusion': matrix.tolist()}
    if jax.process_index() == 0:
      out = pathlib.Path(self.workdir) / 'evaluations'
      out.mkdir(exist_ok=True)
      suffix = '' if self.tested_step else f'-step{self.step}'
      workdirs.write_json(out / f'{name}-{split}{suffix}.json', results)
    return results


def _describe(image: imaging.Source) -> str:
  if isinstance(image, np.ndarray):
    return f'a {image.dtype} array of shape {image.shape}'
  return f'{len(image)} bytes' if isinstance(image, bytes) else str(image)


def expand_patterns(patterns: Sequence[str]) -> list[str]:
  """Paths matching each glob, or the pattern itself where nothing matches (it will fail to read)."""
  return [p for pattern in patterns for p in (sorted(glob.glob(pattern)) or [pattern])]
