"""Embedded Valkey launcher: finds, starts and stops local valkey-server processes.

An I/O adapter for laptops and tests. It owns child processes and their private temp dirs;
it knows nothing about markets, and nothing outside the CLI and tests should need it.
``process`` holds what both launchers share, ``server`` one node, ``cluster`` N joined nodes.
"""

from oddsfeed.freeport import free_port

from .cluster import CLUSTER_SLOTS, EmbeddedCluster, start_cluster
from .process import (
    EmbeddedServerError,
    find_cli_binary,
    find_server_binary,
    valkey_package_bin_dir,
)
from .server import EmbeddedValkey

__all__ = [
    "CLUSTER_SLOTS",
    "EmbeddedCluster",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "find_cli_binary",
    "find_server_binary",
    "free_port",
    "start_cluster",
    "valkey_package_bin_dir",
]
