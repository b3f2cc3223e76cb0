"""The API's contract on a real server: what it takes (JSON numbers only, bounded integers), the
shape of every error, the OpenAPI document, the Host check and security headers, timeouts."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.data.paths import sample_dir
from amnl.serve.errors import ApiError
from amnl.serve.settings import ServeSettings

from .conftest import reading


@pytest.fixture(scope="module")
def rows():
    """FD001 test engine 1 (the sample shipped with amnl: no data folder needed)."""
    test = load_subset(sample_dir(), "FD001", train=False).test
    return test.values[test.unit == test.units[0]]


def settings(db_url, **kw) -> ServeSettings:
    return ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db_url, **kw)


@pytest.fixture
def service(predictor, tmp_path):
    """A started FleetService without HTTP."""
    from amnl.serve.service import FleetService

    s = FleetService(settings(f"sqlite:///{tmp_path / 'a.db'}"), predictor())
    s.start()
    yield s
    s.stop()


def test_validate_is_the_entry_point_for_every_caller(service, rows):
    good = [reading(r) for r in rows[:3]]
    parts = service.validate([{"asset_id": "a", **good[0]}, {"asset_id": "b", **good[0]},
                              {"asset_id": "a", **good[1]}], ["demo"])
    assert [(p.asset_id, p.cycles.tolist()) for p in parts] == [("a", [1, 2]), ("b", [1])]
    assert parts[0].loc == [["demo", 0], ["demo", 2]] and parts[0].raw.dtype == np.float64
    # the checks the HTTP layer's models made are the service's own, for a caller without them
    # (the demo, an embedding application)
    for change, field, kind in (({"s_2": "641.82"}, "s_2", "finite_number"),
                                ({"s_2": True}, "s_2", "finite_number"),
                                ({"s_2": math.nan}, "s_2", "finite_number"),
                                ({"s_2": None}, "s_2", "missing"),
                                ({"cycle": 1.0}, "cycle", "int_type"),
                                ({"cycle": True}, "cycle", "int_type"),
                                ({"cycle": 0}, "cycle", "int_type"),
                                ({"cycle": 2**63}, "cycle", "int_type")):
        with pytest.raises(ApiError) as caught:
            service.validate([good[0], good[1] | change], ["body", "readings"], "a")
        assert caught.value.status == 422
        assert caught.value.detail[0]["loc"] == ["body", "readings", 1, field], change
        assert caught.value.detail[0]["type"] == kind
    with pytest.raises(ApiError) as caught:
        service.validate([good[0], good[2]], ["body", "readings"], "a")
    assert caught.value.detail[0]["expected_cycle"] == 2
    assert service.store.count("readings") == 0
