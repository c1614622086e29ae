"""comicface.imaging.load_image: every input mode, sizes, and refusals."""
import io

import numpy as np
from PIL import Image
import pytest

from comicface import imaging
from comicface import preprocess
from comicface import synthetic


def encode(img: Image.Image, fmt: str = 'PNG', **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


RED = (200, 30, 30)
GREY_OF_RED = round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)  # ITU-R 601, as PIL and cv2


@pytest.mark.parametrize('img, rgb', [
    (Image.new('RGB', (40, 40), RED), RED),
    (Image.new('L', (40, 40), 77), (77, 77, 77)),
    (Image.new('RGB', (40, 40), RED).convert('P'), RED),
    (Image.new('RGBA', (40, 40), RED + (255,)), RED),
    (Image.new('RGBA', (40, 40), RED + (0,)), (255, 255, 255)),  # transparent: paper
    (Image.new('I;16', (40, 40), 0x8000), (128, 128, 128)),      # 16-bit: scaled, not clipped
    (Image.new('1', (40, 40), 1), (255, 255, 255)),
])
def test_modes_convert_to_rgb_and_grey(img, rgb):
  data = encode(img)
  out = imaging.load_image(data, 16, 'RGB')
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  np.testing.assert_allclose(out.reshape(-1, 3).mean(0), rgb, atol=1)
  grey = imaging.load_image(data, 16, 'L')
  assert grey.shape == (16, 16, 1)
  assert abs(grey.mean() - round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])) <= 1


def test_cmyk_jpeg_converts():
  img = Image.new('RGB', (64, 64), RED).convert('CMYK')
  out = imaging.load_image(encode(img, 'JPEG', quality=95), 8, 'RGB')
  np.testing.assert_allclose(out.reshape(-1, 3).mean(0), RED, atol=8)


def test_jpeg_draft_matches_full_decode():
  """DCT-domain downscaling changes the result by less than one grey level on average."""
  for data in synthetic.render_pair(seed=0, index=1, size=512):
    fast = imaging.load_image(data, 128, 'L').astype(float)
    slow = np.asarray(Image.open(io.BytesIO(data)).convert('L').resize((128, 128), Image.LANCZOS))
    assert np.abs(fast[..., 0] - slow).mean() < 1.0


@pytest.mark.parametrize('source, size, mode', [
    (1000, 128, 'L'), (1000, 24, 'RGB'), (1000, 100, 'L'),
    (1000, 300, 'RGB'), (512, 400, 'L'), (700, 200, 'L')])  # libjpeg-turbo alone would scale by 3/8, 7/8, 3/8
def test_turbo_path_matches_pillow(source, size, mode):
  """Plain JPEGs decode through libjpeg-turbo with the same pixels as Pillow's path (the
  exported preprocess.py without simplejpeg), at Pillow's DCT scale."""
  for data in synthetic.render_pair(seed=0, index=1, size=source):
    arr = preprocess._decode_turbo(data, size, mode)
    assert arr is not None
    np.testing.assert_array_equal(arr, np.asarray(preprocess._decode_pil(data, size, mode)).reshape(arr.shape))


def test_exact_dct_scale_skips_the_resize_with_the_same_pixels():
  """1024 px at 1/8 scale is already 128 px: load_image returns the decoder's pixels, as
  Pillow's crop and Lanczos resize to an unchanged size would."""
  for data in synthetic.render_pair(seed=0, index=1, size=1024):
    pil = preprocess._decode_pil(data, 128, 'L')
    assert pil.size == (128, 128)
    np.testing.assert_array_equal(imaging.load_image(data, 128, 'L')[..., 0],
                                  np.asarray(pil.crop((0, 0, 128, 128)).resize((128, 128), Image.LANCZOS)))


@pytest.mark.parametrize('data', [
    encode(Image.new('RGB', (64, 64), RED), 'PNG'),
    encode(Image.new('RGB', (64, 64), RED).convert('CMYK'), 'JPEG'),
    encode(Image.new('RGB', (64, 64), RED), 'JPEG', exif=Image.Exif()),  # may hold a rotation
    encode(Image.new('RGB', (64, 64), RED), 'JPEG')[:300],  # truncated
], ids=['png', 'cmyk', 'exif', 'truncated'])
def test_turbo_path_leaves_the_rest_to_pillow(data):
  assert preprocess._decode_turbo(data, 16, 'RGB') is None


def test_exif_orientation_is_applied():
  img = np.zeros((64, 64), np.uint8)
  img[:, 32:] = 255  # white on the right
  exif = Image.Exif()
  exif[0x0112] = 3  # stored upside down: a viewer turns it by 180 degrees
  out = imaging.load_image(encode(Image.fromarray(img), 'JPEG', exif=exif), 8, 'L')[..., 0]
  assert out[:, :3].min() > 200 and out[:, 5:].max() < 50


def test_non_square_is_centre_cropped():
  img = np.zeros((40, 120), np.uint8)
  img[:, 40:80] = 255  # the centre square is white, the sides black
  out = imaging.load_image(encode(Image.fromarray(img)), 10, 'L')
  assert out.min() == 255


def test_path_and_bytes_agree(tmp_path):
  path = tmp_path / 'x.png'
  path.write_bytes(encode(Image.new('RGB', (30, 20), RED)))
  np.testing.assert_array_equal(imaging.load_image(path, 8, 'RGB'),
                                imaging.load_image(path.read_bytes(), 8, 'RGB'))


@pytest.mark.parametrize('data', [
    b'',
    b'this is a text file, not a JPEG',
    encode(Image.new('RGB', (64, 64), RED), 'JPEG')[:200],  # truncated
])
def test_unreadable_raises_image_error(data):
  with pytest.raises(imaging.ImageError):
    imaging.load_image(data, 8, 'L')


def test_decompression_bomb_is_refused():
  bomb = encode(Image.new('1', (9000, 9000)))  # 81 Mpx, a few kB on disk
  assert len(bomb) < 100_000
  with pytest.raises(imaging.ImageError, match='pixels'):
    imaging.load_image(bomb, 8, 'L')


def test_is_image_name():
  assert imaging.is_image_name('12.JPG') and imaging.is_image_name('a/b/3.png')
  for name in ('.DS_Store', 'Thumbs.db', 'README.md', '._12.jpg', 'notes.txt'):
    assert not imaging.is_image_name(name)
