"""`python -m eventops`."""

from eventops.cli import app

app()
