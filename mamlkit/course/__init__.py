"""The course's teaching helpers, kept apart from the algorithms: exercise feedback (``feedback``,
``checks``, ``homework``, ``project``), figures (``plots``), interactive explorers (``widgets``),
notebook set-up (``notebook``) and the characters of notebook 08 (``characters``).

The library outside this package never imports it (``tests/test_layers.py``); it needs matplotlib
and ipywidgets, which the algorithms do not.
"""
