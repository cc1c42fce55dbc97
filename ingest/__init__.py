"""Feed adapters (this folder installs as the package ``oddsfeed_ingest``): each provider
module has pure normalize_* functions (or a pure state machine) on top and thin async I/O at
the bottom; every update goes through :class:`oddsfeed_ingest.runner.FeedRunner` into the
store's one atomic apply path. Nothing here writes market state any other way.

- :mod:`oddsfeed_ingest.simulator`: ``run_simulator(store, SimulatorConfig(...), stop=, start_ms=)``
- :mod:`oddsfeed_ingest.replay`: ``replay(lines, submit, on_bad, speed=)`` and ``Recorder``
- :mod:`oddsfeed_ingest.oddsapi`: ``normalize_event`` and ``Poller`` (http-poll)
- :mod:`oddsfeed_ingest.betfair`: ``StreamState`` and ``run_stream`` (stream)
- :mod:`oddsfeed_ingest.push`: ``build_push_app`` (push)
- :mod:`oddsfeed_ingest.normalised`: our JSON, ``FeedMapping`` (config/mappings.toml),
  ``parse_line``
- :mod:`oddsfeed_ingest.runner`: ``FeedRunner`` (ordering outcomes, bad data, feed health;
  ``submit_many`` for pipelined batches), ``Lanes`` (per-market order, batches per lane)
- :mod:`oddsfeed_ingest.registry`: ``ADAPTERS``, every adapter by name (options and their defaults,
  provider mapping, checks, runner); adding an adapter is one entry there
- :mod:`oddsfeed_ingest.main`: ``run_adapter``, behind `oddsfeed ingest` and `oddsfeed record`
"""
