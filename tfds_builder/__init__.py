"""TFDS builders of the comicface project."""
