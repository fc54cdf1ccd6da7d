"""The ``robustrank`` command line: a thin Typer layer over the Python API.

Each command parses its arguments, calls the API and prints. Choices (models, datasets,
attacks, executors, optimizers, schedules) come from the registries, so a name registered
in Python, or a model named by import path (with ``--trust-code``), works here too.

One module per command group:

* :mod:`.common` -- the shared options and argument helpers;
* :mod:`.listing` -- ``models``, ``attacks``, ``optimizers``, ``schedules``, ``presets``;
* :mod:`.evaluate` -- ``evaluate``, ``diagnose``, ``curve``;
* :mod:`.train` -- ``train``;
* :mod:`.analysis` -- ``info``, ``analyze``, ``theory``;
* :mod:`.reproduce` -- ``reproduce``, ``budgets``;
* :mod:`.sweep` -- the ``sweep`` sub-app (``run``, ``status``, ``list``);
* :mod:`.data` -- the ``data`` sub-app (``fetch``, ``verify``, ``list``);
* :mod:`.main` -- the root app, ``--debug`` and :func:`main`.
"""

from .main import app, main

__all__ = ["app", "main"]
