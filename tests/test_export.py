"""--mode=export: the tested model as a jax.export artifact, used by JAX alone."""
import io
import json
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from comicface import synthetic, train
from conftest import tiny_config
from test_reliability import run_main

pytestmark = pytest.mark.slow  # main.py three times

# Loads the artifact and predicts with JAX, numpy and PIL only, decoding as model.json says.
FRESH = '''
import json, sys
import jax, numpy as np
from PIL import Image
folder, paths = sys.argv[1], sys.argv[2:]
info = json.load(open(f'{folder}/model.json'))
model = jax.export.deserialize(open(f'{folder}/model.jax', 'rb').read())
images = np.stack([np.asarray(Image.open(p).convert(info['image_mode']), np.uint8) for p in paths])
probs = model.call(images.reshape(len(paths), *info['input']['shape'][1:]))
assert not [m for m in sys.modules if m.startswith('comicface')]
print(json.dumps({'platforms': info['platforms'], 'classes': info['classes'], 'probs': np.asarray(probs).tolist()}))
'''


def test_the_exported_model_predicts_as_predict_does_without_comicface(tmp_path):
  workdir = tmp_path / 'w'
  train.train_and_evaluate(tiny_config(num_epochs=2), str(workdir))
  exported = run_main(workdir, '--mode=export', base=[])
  assert exported.returncode == 0, exported.stderr[-3000:]
  paths = []
  for i in range(3):  # PNGs of the model's own size and mode: decoding them is exact
    for kind, data in zip(('face', 'comic'), synthetic.render_pair(seed=7, index=i, size=128)):
      paths.append(tmp_path / f'{kind}{i}.png')
      Image.open(io.BytesIO(data)).convert('L').save(paths[-1])
  predicted = run_main(workdir, '--mode=predict', f'--images={tmp_path / "*.png"}', base=[])
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  printed = {line.split('\t')[0]: [float(kv.split('=')[1]) for kv in line.split('\t')[2].split()]
             for line in predicted.stdout.splitlines()}
  fresh = subprocess.run([sys.executable, '-c', FRESH, str(workdir / 'export'), *map(str, paths)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert fresh.returncode == 0, fresh.stderr[-3000:]
  out = json.loads(fresh.stdout.splitlines()[-1])
  assert out['platforms'] == ['cpu', 'cuda', 'tpu'] and out['classes'] == ['comic', 'face']
  assert len(printed) == len(paths) == 6
  np.testing.assert_allclose(out['probs'], [printed[str(p)] for p in paths], atol=1e-4)  # printed to 4 decimals
  assert len({round(p[0], 2) for p in out['probs']}) > 1  # the premise: the images are told apart
  meta = json.loads((workdir / 'export' / 'model.json').read_text())
  assert meta['step'] == json.loads((workdir / 'results.json').read_text())['tested_step']
