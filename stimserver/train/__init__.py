"""The model side of stimserver: loading open models, and (with the bake issue) training them.

Imported only by processes of its own (``python -m stimserver.train …``, started by
``scripts/local-model`` and, later, by a bake job); never by ``stimserver serve``, which stays
free of torch (``tests/test_layers.py`` checks). Needs the ``model`` extra.
"""
