"""The ``NN_name.py`` files here are jupytext's paired sources of the notebooks, not
modules: ``--doctest-modules`` would import them, i.e. run each notebook (90 s for
``pytest --collect-only notebooks/``). nbval runs the ``.ipynb`` instead."""

collect_ignore_glob = ["[0-9][0-9]_*.py"]
