"""The generated stand-in: the real v2 layout, and the same seed gives the same bytes."""
import hashlib
import io

import numpy as np
from PIL import Image

from comicface import synthetic


def digest(root):
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*.jpg'))}


def test_layout_and_determinism(tmp_path):
  inner = synthetic.write_dataset(tmp_path / 'a', 6, size=80, seed=7)
  assert inner == tmp_path / 'a' / 'face2comics_v2.0.0_by_Sxela' / 'face2comics_v2.0.0_by_Sxela'
  names = [f'{d}/{i}.jpg' for d in ('comics', 'faces') for i in range(6)]
  assert sorted(p.relative_to(inner).as_posix() for p in inner.rglob('*.jpg')) == sorted(names)
  synthetic.write_dataset(tmp_path / 'b', 6, size=80, seed=7)
  assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
  synthetic.write_dataset(tmp_path / 'c', 6, size=80, seed=8)
  assert digest(tmp_path / 'a') != digest(tmp_path / 'c')


def test_comic_is_flatter_than_its_face():
  """Posterised flat colours against shading and sensor noise: neighbours agree far more often."""
  flat = lambda img: (np.abs(np.diff(img, axis=1)) <= 1).mean()
  for i in range(5):
    face, comic = (np.asarray(Image.open(io.BytesIO(b)).convert('L'), float)
                   for b in synthetic.render_pair(seed=0, index=i, size=256))
    assert face.shape == comic.shape == (256, 256)
    assert flat(comic) > flat(face) + 0.1
