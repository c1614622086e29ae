"""A seeded stand-in for the Kaggle "Comic faces (paired, synthetic) v2" download.

`write_dataset(root, num_pairs, size, seed)` writes the real v2 layout

    root/face2comics_v2.0.0_by_Sxela/face2comics_v2.0.0_by_Sxela/{faces,comics}/N.jpg

where each "face" is a rendered portrait that looks photographic (smooth
shading, soft background, blur, sensor noise) and its comic is the same face
drawn: flat posterised colours, dark outlines and a halftone in the shadows.
Pair `i` depends only on `(seed, i)`, so the same arguments give the same bytes.

`write_folder(root, classes, per_class, ...)` writes a folder of class folders instead (the
'folder' dataset's layout): class c is stripes at its own angle, in PNG and JPEG, grey and
colour, of odd sizes; optionally with split folders of its own, a corrupt file, and a class
folder missing from the test split.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

V2_INNER = pathlib.Path('face2comics_v2.0.0_by_Sxela', 'face2comics_v2.0.0_by_Sxela')
_BG, _HAIR, _SKIN, _SHIRT, _EYE, _MOUTH, _BROW = range(7)


def _label_map(rng: np.random.Generator, size: int) -> np.ndarray:
  """Draws the face's regions as an integer map, one label per region."""
  s = size / 256.0
  img = Image.new('L', (size, size), _BG)
  d = ImageDraw.Draw(img)
  cx = 128 + rng.uniform(-14, 14)
  cy = 124 + rng.uniform(-10, 10)
  fw, fh = rng.uniform(52, 68), rng.uniform(70, 88)
  box = lambda x0, y0, x1, y1: [v * s for v in (x0, y0, x1, y1)]
  d.ellipse(box(cx - 95, cy + fh * 0.8, cx + 95, cy + fh * 0.8 + 160), fill=_SHIRT)
  d.rectangle(box(cx - fw * 0.35, cy + fh * 0.5, cx + fw * 0.35, cy + fh * 1.1), fill=_SKIN)
  hair = rng.uniform(1.05, 1.35)
  d.ellipse(box(cx - fw * hair, cy - fh * 1.15, cx + fw * hair, cy + fh * rng.uniform(0.2, 0.9)), fill=_HAIR)
  d.ellipse(box(cx - fw, cy - fh, cx + fw, cy + fh), fill=_SKIN)
  d.chord(box(cx - fw * 1.02, cy - fh * 1.1, cx + fw * 1.02, cy - fh * 0.1), 180, 360, fill=_HAIR)
  ey, ex, er = cy - fh * 0.12, fw * rng.uniform(0.35, 0.48), rng.uniform(6, 10)
  for sign in (-1, 1):
    x = cx + sign * ex
    d.ellipse(box(x - er * 1.6, ey - er, x + er * 1.6, ey + er), fill=_EYE)
    d.line(box(x - er * 2, ey - er * 2.2, x + er * 2, ey - er * 2.6), fill=_BROW, width=max(1, int(4 * s)))
  my, mw = cy + fh * 0.5, fw * rng.uniform(0.3, 0.5)
  d.chord(box(cx - mw, my - 10, cx + mw, my + rng.uniform(6, 16)), 0, 180, fill=_MOUTH)
  return np.asarray(img)


def _palette(rng: np.random.Generator) -> np.ndarray:
  skin = np.array([224, 172, 140]) * rng.uniform(0.45, 1.1) + rng.uniform(-10, 10, 3)
  return np.clip(np.stack([
      rng.uniform(60, 230, 3),                               # background
      np.array(rng.choice([[40, 28, 20], [90, 60, 30], [200, 170, 90], [20, 20, 25],
                  [150, 60, 30]])) * rng.uniform(0.8, 1.2),  # hair
      skin,
      rng.uniform(20, 220, 3),                               # shirt
      rng.choice([[60, 40, 30], [50, 90, 140], [60, 110, 70]]),  # eyes
      np.array([170, 70, 70]) * rng.uniform(0.8, 1.1),              # mouth
      [40, 30, 25],                                          # brows
  ]), 0, 255)


def _shading(rng: np.random.Generator, size: int) -> np.ndarray:
  """A smooth light field: one directional light plus soft falloff."""
  y, x = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
  angle = rng.uniform(0, 2 * np.pi)
  lit = 0.75 + 0.35 * (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) * 2
  return lit - 0.25 * ((x - 0.5) ** 2 + (y - 0.45) ** 2)


def _harder(face: np.ndarray, comic: np.ndarray, flat: np.ndarray, edges: np.ndarray,
            difficulty: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Draws a face and its comic closer to each other, more so as `difficulty` goes to 1:
  the face's shading flattens toward the comic's colours and it gets part of the outlines;
  the comic loses part of its outlines and gets the face's noise; both take a colour shift
  of their own. At 1 (calibrated with bench/difficulty.py), the CNN study's settings still
  differ after an epoch on 750 pairs, and go on improving; beyond it, none learns in one."""
  d = 0.2 * difficulty
  h, w = edges.shape
  face = (1 - 0.8 * d) * face + 0.8 * d * flat
  face = np.where((edges & (rng.random((h, w)) < 0.7 * d))[..., None], 15.0 * d + face * (1 - d), face)
  lost = edges & (rng.random((h, w)) < 0.6 * d)
  comic = np.where(lost[..., None], flat, comic) + rng.normal(0, 6 * d, (h, w, 3))
  face = face + rng.normal(0, 4 * d, (h, w, 3))
  shift = lambda: rng.uniform(1 - 0.35 * d, 1 + 0.35 * d, 3)
  return face * shift(), comic * shift()


def render_pair(seed: int, index: int, size: int, difficulty: float = 0.0) -> tuple[bytes, bytes]:
  """Returns the JPEG bytes of pair `index`: (face, comic). `difficulty` in [0, 1] draws
  them closer (0: the plain stand-in, whose pixels it leaves as they are)."""
  rng = np.random.default_rng([seed, index])
  labels = _label_map(rng, size)
  colours = _palette(rng)[labels]
  light = _shading(rng, size)[..., None]
  y, x = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
  bg = colours * (0.85 + 0.3 * y[..., None])  # soft background gradient

  face = np.where((labels == _BG)[..., None], bg, colours * light)
  face_img = Image.fromarray(np.clip(face, 0, 255).astype(np.uint8))
  face_img = face_img.filter(ImageFilter.GaussianBlur(size * rng.uniform(0.002, 0.005)))
  noisy = np.asarray(face_img, np.float32) + rng.normal(0, rng.uniform(2, 6), (size, size, 3))
  face_img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))

  levels = rng.integers(4, 7)
  flat = np.round(colours / 255 * levels) / levels * 255
  shadow = (light < np.quantile(light, 0.35))[..., 0] & (labels != _BG)
  period = max(3, size // 64)
  dots = (np.sin(x * size * np.pi / period) * np.sin(y * size * np.pi / period)) > 0.3
  flat = np.where(shadow[..., None], flat * 0.72, flat)
  flat = np.where((shadow & dots)[..., None], flat * 0.6, flat)
  label_img = Image.fromarray(labels)
  edges = np.asarray(label_img.filter(ImageFilter.FIND_EDGES)) > 0
  width = max(3, (size // 128) | 1)
  edges = np.asarray(Image.fromarray(edges.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(width))) > 0
  comic = np.where(edges[..., None], 15.0, flat)
  if difficulty:
    face, comic = _harder(np.asarray(face_img, np.float32), comic, flat, edges, difficulty,
                          np.random.default_rng([seed, index, 1]))  # a stream of its own: d=0 is unchanged
    face_img = Image.fromarray(np.clip(face, 0, 255).astype(np.uint8))
  comic_img = Image.fromarray(np.clip(comic, 0, 255).astype(np.uint8))

  def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, 'JPEG', quality=92)
    return buf.getvalue()
  return jpeg(face_img), jpeg(comic_img)


def write_dataset(root: str | os.PathLike, num_pairs: int, size: int = 1024,
                  seed: int = 0, first_index: int = 0, difficulty: float = 0.0) -> pathlib.Path:
  """Writes `num_pairs` pairs in the v2 layout under `root`; returns the inner folder."""
  inner = pathlib.Path(root) / V2_INNER
  (inner / 'faces').mkdir(parents=True, exist_ok=True)
  (inner / 'comics').mkdir(parents=True, exist_ok=True)

  def write(i: int) -> None:
    face, comic = render_pair(seed, i, size, difficulty)
    (inner / 'faces' / f'{i}.jpg').write_bytes(face)
    (inner / 'comics' / f'{i}.jpg').write_bytes(comic)

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(write, range(first_index, first_index + num_pairs)))
  return inner


def class_name(c: int, classes: int) -> str:
  """The folder name of class `c` of `classes` ('class07')."""
  return f'class{c:0{len(str(classes - 1))}d}'


def render_stripes(seed: int, c: int, classes: int, index: int, size: int) -> Image.Image:
  """Image `index` of class `c`: stripes at angle c/classes of a half turn (jittered), in two
  random colours with noise, about `size` px on a side (odd and unequal sides); every third grey."""
  rng = np.random.default_rng([seed, c, index])
  h, w = (int(size * rng.uniform(0.7, 1.4)) | 1 for _ in range(2))
  angle = np.pi * (c + rng.uniform(-0.25, 0.25)) / classes
  y, x = np.mgrid[0:h, 0:w] / size
  wave = np.sin(2 * np.pi * rng.uniform(3, 5) * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
  a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  pixels = a + (b - a) * (wave[..., None] > 0) + rng.normal(0, 12, (h, w, 3))
  img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  return img.convert('L') if index % 3 == 2 else img


def write_folder(root: str | os.PathLike, classes: int = 3, per_class: int = 10, size: int = 40,
                 seed: int = 0, test_per_class: int = 0, corrupt: bool = False,
                 missing: bool = False) -> pathlib.Path:
  """Writes `classes` class folders of `per_class` images each (`render_stripes`; PNG and JPEG
  in turn) under `root`, or under `root/train` with `test_per_class` more in `root/test` where
  that is > 0; `corrupt`: one more file in the first class that is no image
  ('corrupt.jpg'); `missing`: the last class has no folder in `root/test`. Returns `root`."""
  root = pathlib.Path(root)
  parts = {'train': per_class, 'test': test_per_class} if test_per_class else {'': per_class}
  jobs = [(split, c, i) for split, n in parts.items() for c in range(classes) for i in range(n)
          if not (missing and split == 'test' and c == classes - 1)]

  def write(job: tuple[str, int, int]) -> None:
    split, c, i = job
    folder = root / split / class_name(c, classes)
    folder.mkdir(parents=True, exist_ok=True)
    img = render_stripes(seed, c, classes, i + (per_class if split == 'test' else 0), size)
    img.save(folder / f'{split or "img"}{i:04d}.{"png" if i % 2 else "jpg"}', quality=90)

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(write, jobs))
  if corrupt:
    (root / next(iter(parts)) / class_name(0, classes) / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a JPEG')
  return root


def main(argv: list[str] | None = None) -> None:
  """`python -m comicface.synthetic OUT --pairs N --size S --seed K`."""
  import argparse
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('out')
  p.add_argument('--pairs', type=int, default=1000)
  p.add_argument('--size', type=int, default=1024)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--difficulty', type=float, default=0.0, help='0 (plain) to 1 (faces drawn closest to comics)')
  a = p.parse_args(argv)
  print(write_dataset(a.out, a.pairs, a.size, a.seed, difficulty=a.difficulty))


if __name__ == '__main__':
  main()
