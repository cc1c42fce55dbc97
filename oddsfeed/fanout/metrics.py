"""Prometheus metrics of the fan-out tier (multiprocess-safe when PROMETHEUS_MULTIPROC_DIR
is set before the workers start)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("oddsfeed_ws_connections", "open WebSocket connections",
                    multiprocess_mode="livesum")
SUBSCRIPTIONS = Gauge("oddsfeed_ws_subscriptions", "market and event subscriptions held",
                      multiprocess_mode="livesum")
DELTAS_IN = Counter("oddsfeed_deltas_in_total", "store payloads received from the bus")
FRAMES_OUT = Counter("oddsfeed_ws_frames_out_total", "WebSocket frames written")
MESSAGES_OUT = Counter("oddsfeed_ws_messages_out_total", "protocol messages written")
BYTES_OUT = Counter("oddsfeed_ws_bytes_out_total", "payload bytes written")
CONFLATIONS = Counter("oddsfeed_conflations_total", "runs of deltas conflated for slow clients")
SLOW_CLOSES = Counter("oddsfeed_slow_consumer_closes_total", "connections closed with 4008")
GAPS_REPAIRED = Counter("oddsfeed_redis_gaps_repaired_total",
                        "version gaps on the Redis -> node hop repaired with a snapshot")
RESYNCS = Counter("oddsfeed_resyncs_total", "markets re-read after a bus reconnect")
FEED_INTERRUPTED = Gauge("oddsfeed_feed_interrupted",
                         "1 while a worker has told its clients the feed is interrupted",
                         multiprocess_mode="livemax")
CONNECTIONS_REFUSED = Counter("oddsfeed_ws_connections_refused_total",
                              "connections refused by a per-address or per-subject cap",
                              ["cap"])
BAD_FRAMES = Counter("oddsfeed_ws_bad_frames_total", "client frames rejected as bad_request")
DELIVERY_LATENCY = Histogram(
    "oddsfeed_delivery_latency_seconds", "store apply -> frame written",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
WORKER_BUSY = Gauge("oddsfeed_worker_busy_ratio",
                    "CPU seconds per second of a fan-out worker (smoothed)",
                    multiprocess_mode="liveall")
HOT_WINDOW = Gauge("oddsfeed_ws_hot_batch_window_seconds",
                   "batching window of hot connections (widens with the worker's busy share)",
                   multiprocess_mode="livemax")
