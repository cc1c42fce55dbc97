"""The pure core: prices, markets, the order book, the wire format, subscriptions, sessions
and bet-slip rules. No I/O, no clock, no environment: everything here is a function of its
arguments, and nothing here imports outside this package but the standard library and
msgpack (tests/test_layers.py checks it). The Python SDK ships this package as its own copy
(clients/python), so it must stay importable without the server's dependencies."""
