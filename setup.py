"""The package layout and the optional C extension; everything else is in pyproject.toml.

The feed adapters live in the top-level ``ingest/`` folder but install as
``oddsfeed_ingest``: a top-level module named ``ingest`` could clash with any other
project's in site-packages.

oddsfeed.fanout._send writes one frame to many sockets in one call (the fan-out hot path).
It is optional: where it cannot be built (no C compiler), the install still succeeds and
the server uses its same-signature Python loop (oddsfeed/fanout/writer_py.py) instead."""

from setuptools import Extension, find_packages, setup

setup(packages=[*find_packages(include=["oddsfeed", "oddsfeed.*"]), "oddsfeed_ingest"],
      package_dir={"oddsfeed_ingest": "ingest"},
      ext_modules=[Extension("oddsfeed.fanout._send", ["oddsfeed/fanout/_send.c"],
                             optional=True)])
