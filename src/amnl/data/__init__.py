"""Stage 1: C-MAPSS files on disk -> validated arrays (no scaling here)."""

from amnl.data.cmapss import (
    COLUMNS,
    SUBSETS,
    EngineTable,
    Subset,
    load_subset,
    read_rul,
    read_table,
)
from amnl.data.paths import resolve_data_dir

__all__ = [
    "COLUMNS",
    "SUBSETS",
    "EngineTable",
    "Subset",
    "load_subset",
    "read_rul",
    "read_table",
    "resolve_data_dir",
]
