"""Factories every test tier uses: images (``images``) and index files (``index_files``)."""
