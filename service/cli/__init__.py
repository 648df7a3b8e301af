"""latentgram command line: every step of a run, each safe to re-run.

latentgram prepare --run runs/default       # data → BL-AE → encode → tables → γ-ARVMs → samples
latentgram --help                           # all commands

- app.py          the Typer app, shared options, and main (user errors: one line, exit 2)
- autoencoder.py  data, train-ae, encode, decode
- tables.py       migrate, build, tables
- sampling.py     train-arvm, sample
- pipeline.py     prepare
- serving.py      report, serve

Modules that import torch or matplotlib are imported inside the commands that run them, so that
`latentgram --help`, `build` and every refusal of bad input answer in about a second, not five
(tests/test_layout.py holds the command line to that).
"""

# Commands register as their modules are imported, in the order `latentgram --help` lists them.
# isort: off
from service.cli import autoencoder, tables, sampling, pipeline, serving  # noqa: F401
from service.cli.app import app, main

# isort: on

__all__ = ["app", "main"]
