"""oddsfeed: a live-odds push server for sportsbooks."""

__version__ = "0.1.0"
