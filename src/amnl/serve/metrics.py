"""The service's Prometheus metrics (``GET /metrics``), one registry per service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

#: Request latency buckets, seconds (loopback ingestion sits at 1-20 ms).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Batch size buckets, windows.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """Every metric of ``amnl serve``; names start with ``amnl_``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "amnl_request_duration_seconds", "HTTP request latency by route.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("amnl_batch_size", "Windows per forward pass.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("amnl_batch_duration_seconds",
                                       "Time of one forward pass.", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.batches = Counter("amnl_batches", "Forward passes by the reason they were released.",
                               ["reason"], registry=r)
        self.queue_depth = Gauge("amnl_prediction_queue_depth",
                                 "Acknowledged readings waiting for their prediction: queued, "
                                 "or in the database for a catch-up.", registry=r)
        self.predictions = Counter("amnl_predictions", "Predictions stored.", registry=r)
        self.failed_predictions = Counter(
            "amnl_prediction_failures", "Forward passes or prediction writes that failed (their "
            "readings are caught up from the database).", registry=r)
        self.windows_failed = Counter(
            "amnl_prediction_windows_failed", "Windows whose forward pass failed alone (a failed "
            "pass is bisected): set_aside (tried again after a doubling pause) or given_up "
            "(left unpredicted until a restart, logged).", ["result"], registry=r)
        self.windows_set_aside = Gauge("amnl_prediction_windows_set_aside",
                                       "Windows set aside or given up now.", registry=r)
        self.acknowledged = Counter("amnl_readings_acknowledged",
                                    "Readings stored and acknowledged.", registry=r)
        self.rejected = Counter("amnl_readings_rejected", "Readings refused, by reason.",
                                ["reason"], registry=r)
        self.ack_to_prediction = Histogram(
            "amnl_ack_to_prediction_seconds",
            "From a reading's acknowledgement to its stored prediction.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram("amnl_commit_duration_seconds",
                                        "One group commit of the writer.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.assets = Gauge("amnl_assets", "Assets known to the service.", registry=r)
        self.model = Info("amnl_model", "The model being served.", registry=r)
        self.unknown_conditions = Counter(
            "amnl_unknown_condition_readings",
            "Readings far from every operating condition the model was trained on.", registry=r)
        self.drift_psi = Gauge("amnl_drift_psi", "PSI of recent readings against the training "
                               "distribution, per operating condition and model input.",
                               ["condition", "feature"], registry=r)
        self.unknown_share = Gauge("amnl_unknown_condition_share",
                                   "Share of unknown-condition readings among recent ones.",
                                   registry=r)
        self.alerts_open = Gauge("amnl_alerts_open", "Open (active) alerts by severity.",
                                 ["severity"], registry=r)
        self.alert_events = Counter("amnl_alert_events", "Alert transitions stored.", registry=r)
        self.background_errors = Counter(
            "amnl_background_errors", "Failures the service's threads survived (logged with a "
            "traceback), by thread and step.", ["thread", "step"], registry=r)
        self.thread_alive = Gauge("amnl_thread_alive", "1 while the thread runs; 0: it died and "
                                  "/readyz answers 503.", ["thread"], registry=r)
        self.webhook_attempts = Counter("amnl_webhook_attempts", "Webhook delivery attempts.",
                                        ["result"], registry=r)
