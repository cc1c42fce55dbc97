"""Feed adapters: each provider module has pure normalize_* functions on top and thin async
I/O at the bottom; every update goes through the store's one atomic apply path."""
