"""comic_faces dataset."""
from tfds_builder.comic_faces.comic_faces_dataset_builder import Builder  # noqa: F401
