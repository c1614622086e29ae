"""TFDS's own builder test over dummy_data/ (needs TensorFlow; skipped without it).

The same builds run without TensorFlow in tests/test_dataset_builder.py.
"""
import pytest

pytest.importorskip('tensorflow')
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from tfds_builder.comic_faces import comic_faces_dataset_builder


class ComicFacesTest(tfds.testing.DatasetBuilderTestCase):
  """Builds every config from dummy_data/ (26 pairs) and checks split sizes."""
  DATASET_CLASS = comic_faces_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ['gray128', 'rgb24']
  SPLITS = {'train': 38, 'validation': 4, 'test': 10}
  SKIP_TF1_GRAPH_MODE = True


if __name__ == '__main__':
  tfds.testing.test_main()
