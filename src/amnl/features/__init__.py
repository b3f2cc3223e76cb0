"""Stage 2: engine arrays -> scaled windows and labels."""

from amnl.features.conditions import OperatingConditions
from amnl.features.labels import HEALTH_CLASSES, health_labels, train_rul
from amnl.features.pipeline import Preprocessor, Windows
from amnl.features.scaling import ConditionScaler
from amnl.features.windows import window_index

__all__ = ["HEALTH_CLASSES", "ConditionScaler", "OperatingConditions", "Preprocessor", "Windows",
           "health_labels", "train_rul", "window_index"]
