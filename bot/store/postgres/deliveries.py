"""Deliveries in PostgreSQL: the statements behind the group commit (``bot.store.batches``).

Without it every acknowledgement would wait for a commit of its own, one flush of the log each,
and the commits of all replicas queue for that flush.
"""

from __future__ import annotations

from bot.store.batches import Arrival, DeliveryBatches, Outcome
from bot.store.postgres.connection import Connections
from bot.store.postgres.rows import Tx


class DeliveryWriter(DeliveryBatches):
    def __init__(self, connections: Connections) -> None:
        super().__init__()
        self._c = connections

    async def insert_new(self, batch: list[Arrival]) -> list[bool]:
        """One statement; the ids it inserted come back, and of an id twice in the batch the first
        is the new one. A delivery another replica stored first is not new here either."""

        async def step(tx: Tx) -> set[str]:
            found = await tx.returning(
                "INSERT INTO deliveries (id, event_type, body, received_at)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::float8[])"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                *(list(column) for column in zip(*(item[:4] for item in batch), strict=True)),
            )
            return {r["id"] for r in found}

        inserted = await self._c.write(step, "deliveries", single=True)
        fresh = []
        for delivery_id, *_ in batch:
            fresh.append(delivery_id in inserted)
            inserted.discard(delivery_id)
        return fresh

    async def record_outcomes(self, done: list[Outcome]) -> list[None]:
        """One statement, outside a transaction (no other replica listens for deliveries): a
        handled delivery gets its time, a failed one another attempt and its error."""

        async def step(tx: Tx) -> None:
            await tx.execute(
                "UPDATE deliveries SET handled_at = CASE WHEN f.error IS NULL THEN $3 ELSE handled_at END,"
                " attempts = attempts + (f.error IS NOT NULL)::int, error = COALESCE(f.error, deliveries.error)"
                " FROM unnest($1::text[], $2::text[]) AS f (id, error) WHERE deliveries.id = f.id",
                [i for i, _, _, _ in done], [error for _, error, _, _ in done], done[-1][2],
            )

        await self._c.write(step, "deliveries", single=True)
        return [None] * len(done)
