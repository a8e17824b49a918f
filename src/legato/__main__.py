"""``python -m legato`` runs the command line."""

from legato.cli import app

app(prog_name="legato")
