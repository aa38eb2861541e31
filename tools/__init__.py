"""Command-line tools run by hand beside the services; no service imports them."""
