"""Stage 5: metrics and the one evaluation routine used for every runtime and precision."""

from amnl.evaluate.metrics import health_metrics, mae, nasa_score, rmse, rul_metrics

__all__ = ["health_metrics", "mae", "nasa_score", "rmse", "rul_metrics"]
