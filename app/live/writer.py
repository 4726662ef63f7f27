"""The store writer: a bounded queue drained by one background task, off the request path.

``submit`` never blocks and never raises: a full queue drops the item and counts it
(``dars_live_records_total{result="dropped"}``). The task writes batches from a worker thread
(the stores are synchronous), so the event loop never waits on SQLite or Redis; a failed batch
is logged and counted, never retried (the queue stays bounded). Request ids submitted but not
yet written are remembered, so feedback that races the writer is not refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from app.live.metrics import LiveMetrics
from app.tasks import cancel_and_wait
from router_models.live.records import Grade, LiveRecord
from router_models.live.store import LiveStore

__all__ = ["LiveWriter"]

logger = logging.getLogger(__name__)

Item = LiveRecord | Grade


class LiveWriter:
    """Queue records and grades; one task writes them in batches of up to ``batch_size``."""

    def __init__(
        self,
        store: LiveStore,
        metrics: LiveMetrics,
        *,
        max_queue: int = 10_000,
        batch_size: int = 256,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.batch_size = batch_size
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=max_queue)
        self._pending: dict[str, tuple[int, LiveRecord]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dars-live-writer")

    def submit(self, item: Item) -> bool:
        """Queue ``item``; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.records.labels(result="dropped").inc()
            return False
        if isinstance(item, LiveRecord):
            count = self._pending.get(item.request_id, (0, item))[0]
            self._pending[item.request_id] = (count + 1, item)
        self.metrics.queue_depth.set(self._queue.qsize())
        return True

    def pending(self, request_id: str) -> LiveRecord | None:
        """The record of ``request_id`` if it is queued but not written yet."""
        entry = self._pending.get(request_id)
        return None if entry is None else entry[1]

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: Sequence[Item]) -> None:
        records = [item for item in batch if isinstance(item, LiveRecord)]
        grades = [item for item in batch if isinstance(item, Grade)]
        try:
            await asyncio.to_thread(self._write_sync, records, grades)
        except Exception as exc:  # the store is down or full: count, log, go on
            logger.warning("live store write of %d items failed: %s", len(batch), exc)
            self.metrics.records.labels(result="failed").inc(len(batch))
        else:
            self.metrics.records.labels(result="written").inc(len(batch))
        finally:
            for record in records:
                count, latest = self._pending.get(record.request_id, (1, record))
                if count > 1:
                    self._pending[record.request_id] = (count - 1, latest)
                else:
                    self._pending.pop(record.request_id, None)
            self.metrics.queue_depth.set(self._queue.qsize())

    def _write_sync(self, records: list[LiveRecord], grades: list[Grade]) -> None:
        self.store.add_records(records)
        self.store.add_grades(grades)

    async def flush(self) -> None:
        """Write everything queued now (shutdown, tests)."""
        batch: list[Item] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._write(batch)

    async def aclose(self) -> None:
        """Stop the task, then write what is left: a clean shutdown loses nothing queued."""
        await cancel_and_wait(self._task)
        await self.flush()
        await asyncio.to_thread(self.store.close)
