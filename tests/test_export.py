"""--mode=export: the tested model as a jax.export artifact, used as the README shows, without comicface."""
import ast
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from comicface import synthetic, train
from conftest import ROOT, read_predictions, tiny_config
from test_reliability import run_main

pytestmark = pytest.mark.slow  # main.py twice, the README's code twice


def readme_snippet() -> str:
  """The README's code that calls an exported model: its indented block that deserializes model.jax."""
  blocks = [b for b in (ROOT / 'docs' / 'evaluation.md').read_text().split('\n\n')
            if 'jax.export.deserialize' in b and all(line.startswith('    ') for line in b.splitlines())]
  assert len(blocks) == 1, blocks
  return '\n'.join(line[4:] for line in blocks[0].splitlines()) + '\n'


def write_images(folder: pathlib.Path) -> list[str]:
  """The dataset's kinds of images: 1024 and 512 px JPEGs (RGB and grey), other sizes as PNGs."""
  folder.mkdir(parents=True)
  for i in range(2):
    for kind, data in zip(('face', 'comic'), synthetic.render_pair(seed=7, index=i, size=1024)):
      img = Image.open(io.BytesIO(data))
      (folder / f'{kind}{i}_1024.jpg').write_bytes(data)  # as stored in the dataset: RGB
      img.convert('L').save(folder / f'{kind}{i}_1024_grey.jpg', quality=90)
      img.resize((512, 512), Image.Resampling.LANCZOS).save(folder / f'{kind}{i}_512.jpg', quality=90)
      img.resize((700, 700), Image.Resampling.LANCZOS).save(folder / f'{kind}{i}_700.jpg', quality=90)
      img.resize((300, 200), Image.Resampling.LANCZOS).save(folder / f'{kind}{i}_300x200.png')
      img.convert('L').resize((150, 150), Image.Resampling.LANCZOS).save(folder / f'{kind}{i}_150_grey.png')
  return sorted(p.name for p in folder.iterdir())


def run_snippet(user: pathlib.Path, blocked: list[str]) -> dict[str, list[float]]:
  """{file name: probabilities} that the README's code prints, run in `user` (where
  runs/default and photos/ are) with the modules `blocked` unimportable; the project is not on its path."""
  stubs = user / f'no_{"_".join(blocked)}'
  for name in blocked:
    (stubs / name).mkdir(parents=True)
    (stubs / name / '__init__.py').write_text(f'raise ImportError("{name} is blocked")\n')
  env = {**os.environ, 'PYTHONPATH': str(stubs)}
  assert subprocess.run([sys.executable, '-c', 'import comicface'], env=env, cwd=user).returncode != 0  # the premise
  out = subprocess.run([sys.executable, '-c', readme_snippet()], capture_output=True, text=True, cwd=user,
                       env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line.split(' ', 1) for line in out.stdout.splitlines()]
  return {pathlib.Path(path).name: list(ast.literal_eval(probs).values()) for path, probs in rows}


def test_the_exported_model_called_as_the_readme_shows_predicts_as_predict_does(tmp_path):
  workdir = tmp_path / 'w'
  train.train_and_evaluate(tiny_config(num_epochs=2), str(workdir))
  exported = run_main(workdir, '--mode=export', base=[])
  assert exported.returncode == 0, exported.stderr[-3000:]
  user = tmp_path / 'user'
  names = write_images(user / 'photos')
  (user / 'runs').mkdir()
  (user / 'runs' / 'default').symlink_to(workdir)
  predicted = run_main(workdir, '--mode=predict', f'--images={user / "photos" / "*"}', base=[])
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  printed = {pathlib.Path(path).name: [prob for _, prob in pairs]
             for path, (_, pairs) in read_predictions(predicted.stdout)[0].items()}
  assert sorted(printed) == names and len(names) == 24
  assert len({round(p[0], 2) for p in printed.values()}) > 4  # the premise: the images are told apart
  for blocked in (['comicface'], ['comicface', 'simplejpeg']):  # Pillow alone decodes JPEGs the same
    fresh = run_snippet(user, blocked)
    assert sorted(fresh) == names
    np.testing.assert_allclose([fresh[n] for n in names], [printed[n] for n in names], atol=1e-4)  # printed to 4 decimals
  meta = json.loads((workdir / 'export' / 'model.json').read_text())
  assert meta['platforms'] == ['cpu', 'cuda', 'tpu'] and meta['classes'] == ['comic', 'face']
  assert meta['step'] == json.loads((workdir / 'results.json').read_text())['tested_step']
