"""The command layer: one module per group of ``legato`` commands, each a thin Typer function over the library.

:mod:`legato.cli` assembles them; business logic lives in the packages below.
"""
