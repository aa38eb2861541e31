"""`python -m services.autoencoder [ROLE ...]`: a worker on those queue roles (default: all)."""

import sys

from shared.runtime.worker import run_worker

from .worker import app, settings

run_worker(app, "autoencoder", settings, sys.argv[1:] or None)
