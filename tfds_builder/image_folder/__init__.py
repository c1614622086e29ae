"""image_folder dataset: any folder of class folders."""
from tfds_builder.image_folder.image_folder_dataset_builder import Builder  # noqa: F401
