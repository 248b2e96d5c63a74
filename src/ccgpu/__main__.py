"""`python -m ccgpu` runs the CLI (tests use it so a subprocess runs this checkout's code)."""

from ccgpu.cli import app

app()
