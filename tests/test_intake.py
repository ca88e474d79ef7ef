"""The intake holds a window of the stored deliveries in memory; the rest wait in the store."""

from bot.intake import deliveries as intake_module
from bot.intake.deliveries import Intake
from bot.intake.routing import Router
from bot.intake.webhook import Event

from .helpers import example


async def test_a_backlog_past_the_window_is_read_back_and_handled_once_in_order(make_bot, monkeypatch):
    bot = await make_bot(frozen=True)
    monkeypatch.setattr(intake_module, "WINDOW", 2)
    _, body = example("issue-comment-created.json")
    seen: list[str] = []
    router = Router()

    @router.register("issue_comment")
    async def record(event, services):
        seen.append(event.delivery_id)

    intake = Intake(bot.services, router)
    ids = [f"backlog-{n}" for n in range(7)]
    for delivery_id in ids:  # as the front door does while the worker is busy
        assert await bot.store.record_delivery(delivery_id, "issue_comment", body)
        intake.submit(Event.parse("issue_comment", delivery_id, body))
    assert intake._queue.qsize() == 2  # the other five are only in the store
    await intake.start()
    try:
        await intake.drained()
        assert seen == ids
        assert not [d for d in await bot.store.pending_deliveries() if d[0] in ids]

        # A delivery that failed waits for the scheduler's pass; reading back after a burst skips it.
        assert await bot.store.record_delivery("failed-once", "issue_comment", body)
        await bot.store.finish_delivery("failed-once", "503 from the Forge")
        await intake.retry_pending(untried=True)
        await intake.drained()
        assert "failed-once" not in seen
        await intake.retry_pending()
        await intake.drained()
        assert seen[-1] == "failed-once" and len(seen) == 8
    finally:
        await intake.stop()
