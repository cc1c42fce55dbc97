"""Use cases over the core: each depends on small protocols (ports) for what it reads or
records, never on a concrete adapter; the composition root (worker, cli) binds them."""
