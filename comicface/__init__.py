"""comicface: tell real face photos from comic drawings of the same faces."""
