"""`python -m services.vgg16 [ROLE ...]`: a worker on those queue roles (default: all)."""

import sys

from shared.runtime.worker import run_worker

from .worker import app, settings

run_worker(app, "vgg16", settings, sys.argv[1:] or None)
