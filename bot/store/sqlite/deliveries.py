"""Deliveries in SQLite: the statements behind the group commit (``bot.store.batches``).

Each statement is its own transaction (autocommit), so a batch costs one trip to the database
thread rather than one per step.
"""

from __future__ import annotations


from bot.store.batches import Arrival, DeliveryBatches, Outcome
from bot.store.sqlite.rows import Session, marks


class DeliveryWriter(DeliveryBatches):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self._session = session

    async def insert_new(self, batch: list[Arrival]) -> list[bool]:
        """Insert the deliveries not seen before (ids repeat on redelivery); which ones were new.

        One statement with no rows back (a ``RETURNING`` row costs a step, and each step takes
        the GIL again). Redeliveries are rare: only when fewer rows went in than the batch had is
        the table read back, and a row holding this batch's arrival time went in now.
        """
        ids = [item[0] for item in batch]
        async with self._session("deliveries", atomic=False) as db:
            cursor = await db.execute(
                "INSERT INTO deliveries (id, event_type, body, received_at)"
                f" VALUES {', '.join(['(?, ?, ?, ?)'] * len(batch))} ON CONFLICT (id) DO NOTHING",
                [value for item in batch for value in item[:4]],
            )
            if cursor.rowcount == len(batch):
                return [True] * len(batch)
            rows = await db.execute_fetchall(f"SELECT id, received_at FROM deliveries WHERE id IN ({marks(ids)})", ids)
        stored = dict(rows)
        fresh, seen = [], set()
        for delivery_id, _, _, at, _ in batch:
            fresh.append(delivery_id not in seen and stored.get(delivery_id) == at)
            seen.add(delivery_id)
        return fresh

    async def record_outcomes(self, done: list[Outcome]) -> list[None]:
        handled = [i for i, error, _, _ in done if error is None]
        failed = [(error, i) for i, error, _, _ in done if error is not None]
        if handled:
            async with self._session("deliveries", atomic=False) as db:
                await db.execute(
                    f"UPDATE deliveries SET handled_at = ? WHERE id IN ({marks(handled)})", [done[-1][2], *handled]
                )
        if failed:
            async with self._session("deliveries") as db:
                await db.executemany("UPDATE deliveries SET attempts = attempts + 1, error = ? WHERE id = ?", failed)
        return [None] * len(done)
