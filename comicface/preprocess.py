"""Decode any image file into the fixed-size uint8 array the models see.

Self-contained (numpy and Pillow; simplejpeg, where installed, only makes JPEGs
faster with the same pixels): `--mode=export` writes this very file next to the
exported model, so a model used without comicface sees the pixels that the
dataset builder and `--mode=predict` give it (both call `load_image` here,
through `comicface.imaging`).

Plain JPEGs (the whole Kaggle dataset) are downscaled inside the decoder (DCT
scaling by 1/2, 1/4 or 1/8, grey taken from the JPEG's Y plane), by
libjpeg-turbo through simplejpeg where it is installed, else by Pillow's
`draft`: the same scale, the same pixels.
"""
from __future__ import annotations

import io
import os
import pathlib
from typing import Union

import numpy as np
from PIL import Image, ImageOps

try:
  import simplejpeg
except ImportError:  # Pillow decodes JPEGs alone: the same pixels, slower
  simplejpeg = None

# Refuse anything larger before decoding (a "decompression bomb"). The real
# dataset is 1024x1024; this admits images up to about 8000x8000.
MAX_PIXELS = 64_000_000

Source = Union[str, os.PathLike, bytes, np.ndarray]


class ImageError(ValueError):
  """A file that cannot be turned into an image (corrupt, empty, too big)."""


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
  """Converts any PIL mode (16-bit, palette, alpha, CMYK...) to 'L' or 'RGB'."""
  if img.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    # 16/32-bit greys: scale to 8 bits instead of clipping as convert() does.
    a = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith('I;16') or a.max() > 255 else 255.0
    img = Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
  if img.mode == 'P':
    img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
  if img.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    # Transparent parts become white paper, as a viewer would show them.
    rgba = img.convert('RGBA')
    img = Image.new('RGB', rgba.size, (255, 255, 255))
    img.paste(rgba, mask=rgba.getchannel('A'))
  return img if img.mode == mode else img.convert(mode)


def _has_exif(jpeg: bytes) -> bool:
  """Whether a JPEG's header holds an EXIF segment (which may rotate the image)."""
  i = 2
  while i + 10 <= len(jpeg) and jpeg[i] == 0xFF:
    marker = jpeg[i + 1]
    if marker == 0xDA:  # start of scan: the header is over
      return False
    if marker == 0xE1 and jpeg[i + 4:i + 10] == b'Exif\0\0':
      return True
    i += 2 + int.from_bytes(jpeg[i + 2:i + 4], 'big')
  return False


def _draft_size(w: int, h: int, size: int) -> tuple[int, int]:
  """The (w, h) asked of the JPEG decoder: the shorter side `size`, the aspect kept."""
  side = min(w, h)
  return size * w // side, size * h // side


def _dct_scale(w: int, h: int, size: int) -> int:
  """The DCT scale divisor (8, 4, 2 or 1) that Pillow's `draft` picks for `_draft_size`."""
  dw, dh = _draft_size(w, h, size)
  ratio = min(w // dw, h // dh)
  return next((s for s in (8, 4, 2) if ratio >= s), 1)


def _decode_turbo(data: bytes, size: int, mode: str) -> np.ndarray | None:
  """A plain JPEG, decoded by libjpeg-turbo at Pillow's DCT scale (`_dct_scale`), as
  (h, w, C) uint8; None where Pillow must decode (no simplejpeg, not a JPEG, CMYK,
  EXIF, too big, or anything libjpeg-turbo reports as damaged)."""
  if simplejpeg is None or not data.startswith(b'\xff\xd8') or _has_exif(data):
    return None
  try:
    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    if colorspace not in ('Gray', 'YCbCr') or w * h > MAX_PIXELS:
      return None
    scale = _dct_scale(w, h, size)
    # libjpeg-turbo scales by eighths: the smallest output of at least w/scale x h/scale is 1/scale.
    arr = simplejpeg.decode_jpeg(data, colorspace='GRAY' if mode == 'L' else 'RGB',
                                 min_height=-(-h // scale), min_width=-(-w // scale))
  except ValueError:
    return None
  return arr


def _decode_pil(data: bytes, size: int, mode: str) -> Image.Image:
  """Any format Pillow reads: EXIF orientation applied, converted to `mode`."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      w, h = img.size
      if w * h > MAX_PIXELS:
        raise ImageError(f'{w}x{h} image has more than {MAX_PIXELS} pixels; refused')
      if img.format == 'JPEG':
        img.draft(mode, _draft_size(w, h, size))
      return _to_mode(ImageOps.exif_transpose(img), mode)
  except ImageError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ImageError(f'cannot decode image: {e}') from e


def _from_array(pixels: np.ndarray, mode: str) -> Image.Image:
  """A uint8 (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) array as a PIL image in `mode`."""
  if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (
      pixels.ndim == 3 and pixels.shape[-1] not in (1, 3, 4)):
    raise ImageError(f'an image array must be uint8 of shape (h, w[, 1|3|4]), not '
                     f'{pixels.dtype} {pixels.shape}')
  return _to_mode(Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels), mode)


def load_image(source: Source, size: int, mode: str) -> np.ndarray:
  """Decodes `source` (a path, encoded bytes, or a uint8 pixel array) to a
  `(size, size, C)` uint8 array.

  Steps: EXIF orientation, colour conversion to `mode` ('L' or 'RGB'), a centre
  crop to a square, and an antialiased (Lanczos) resize. JPEGs are first
  downscaled inside the decoder (DCT scaling), which is several times faster.
  Raises `ImageError` for anything that is not a readable image of sane size.
  """
  if mode not in ('L', 'RGB'):
    raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
  if isinstance(source, np.ndarray):
    img = _from_array(source, mode)
  else:
    data = source if isinstance(source, bytes) else pathlib.Path(source).read_bytes()
    arr = _decode_turbo(data, size, mode)
    if arr is not None and arr.shape[:2] == (size, size):
      return arr  # the decoder's own scaling gave the size: cropping and resizing change nothing
    img = _decode_pil(data, size, mode) if arr is None else Image.fromarray(arr.squeeze(-1) if mode == 'L' else arr)
  w, h = img.size
  side = min(w, h)
  box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
  img = img.crop(box).resize((size, size), Image.Resampling.LANCZOS)
  arr = np.asarray(img, dtype=np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr
