"""`python -m services.autoencoder [ROLE ...]`: a worker on those queue roles (default: all)."""

import sys

from shared.runtime.worker import run_worker

from .worker import app

run_worker(app, "autoencoder", sys.argv[1:] or None)
