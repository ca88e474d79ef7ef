"""A worker's tasks end at the bot's stop even when a cancel is lost on the way."""

import asyncio

from bot import tasks


async def test_a_task_that_lost_its_cancel_is_cancelled_again_until_it_ends():
    lost = []

    async def worker():  # a loop that takes a cancel for an error once, as a library timeout can make it
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append(True)

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.cancel([task, None]), timeout=10)
    assert lost and task.cancelled()
