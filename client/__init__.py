"""Command-line client of the image search service: talks HTTP only (``imgsearch --help``)."""
