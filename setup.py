"""Only the optional C extension lives here; everything else is in pyproject.toml.

oddsfeed.fanout._send writes one frame to many sockets in one call (the fan-out hot path).
It is optional: where it cannot be built (no C compiler), the install still succeeds and
the server writes through its transports instead."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("oddsfeed.fanout._send", ["oddsfeed/fanout/_send.c"],
                             optional=True)])
