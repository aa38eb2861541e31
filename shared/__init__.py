"""Code every service agrees on: settings, queue and task names, Redis keys, job contracts."""
