"""What only the worker services import: the Celery worker base, vector indexes, search
batching, worker metrics and the TensorFlow helpers (``ml``). The gateway never imports
this package and its image does not ship it (tests/fast/test_layering.py)."""
