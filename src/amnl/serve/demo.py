"""``amnl serve --demo``: a live fleet out of the box, from the FD001 test set shipped with amnl.

A thread replays the 100 FD001 test engines into the running service, one cycle of every
engine still running per tick (``speed`` ticks a second), as a gateway would post them
(``POST /v1/readings``'s path, in process). When an engine's history ends, its failure is
recorded at its true end of life (the last cycle plus its RUL from ``RUL_FD001.txt``), so the
accuracy panel fills in. The engines with the least life left raise the RUL alerts within the
first minute at 10 cycles a second. Assets are named ``demo-001`` .. ``demo-100``; a new demo
replaces the previous demo's assets.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from amnl.data.cmapss import COLUMNS, load_subset
from amnl.data.paths import sample_dir
from amnl.features.online import READING_COLUMNS
from amnl.serve.errors import ApiError

logger = logging.getLogger(__name__)

PREFIX = "demo-"
_RAW = [COLUMNS.index(c) for c in READING_COLUMNS]


class Demo:
    """The replay thread.

    Args:
        service: a started :class:`amnl.serve.service.FleetService`.
        speed: cycles a second.
        engines: how many of the 100 test engines.
    """

    def __init__(self, service, speed: float = 10.0, engines: int = 100) -> None:
        subset = load_subset(sample_dir(), "FD001", train=False)
        test = subset.test
        self.service, self.speed = service, speed
        self.histories = {f"{PREFIX}{int(u):03d}": test.values[test.unit == u]
                          for u in test.units[:engines]}
        self.failures = {f"{PREFIX}{int(u):03d}": int(test.cycle[test.unit == u][-1]) + int(r)
                         for u, r in zip(test.units[:engines], subset.rul[:engines])}
        self.cycle = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amnl-demo", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            for a in self.histories:  # a fresh demo
                if self.service.known(a):
                    loop.run_until_complete(self.service.delete(a))
            longest = max(len(h) for h in self.histories.values())
            logger.info("demo: replaying %d FD001 test engines at %g cycles/s (%d cycles)",
                        len(self.histories), self.speed, longest)
            for k in range(longest):
                if self._stop.wait(1.0 / self.speed):
                    return
                self.cycle = k + 1
                # the readings a gateway would post, through the same checks as the HTTP path
                parts = self.service.validate(
                    [{"asset_id": a, "cycle": int(h[k, 1]), **dict(zip(READING_COLUMNS,
                                                                        h[k, _RAW].tolist()))}
                     for a, h in self.histories.items() if k < len(h)], ["demo", k])
                loop.run_until_complete(self.service.ingest(parts))
                for a, h in self.histories.items():
                    if k == len(h) - 1:
                        loop.run_until_complete(self.service.failure(a, self.failures[a]))
            logger.info("demo: every engine has reached the end of its test history")
        except ApiError as exc:
            logger.error("demo stopped: %s", exc)
        finally:
            loop.close()
