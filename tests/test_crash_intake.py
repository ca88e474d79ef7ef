"""Crash after the ack: a delivery answered but not yet handled is handled after a restart, once."""

from .helpers import wait_for
from .process import BotProcess


async def test_requests_acked_before_a_kill_appear_once_after_restart(world):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = BotProcess(forge.url, world["bot"].token, world["tmp"] / "data", DISPATCHBOT_FROZEN="true")
    await bot.start()
    try:
        forge.add_hook(repo, url=bot.url + "/webhook", secret=bot.secret)
        issue = await forge.create_issue(repo, bob, title="Crash", body="")
        await forge.outage_start()  # handlers need the Forge (permission check): they cannot finish
        for n in range(5):
            await forge.create_comment(repo, issue.number, bob, f"/dispatch codex task {n}")
        acked = [d for d in forge.deliveries if d.event_type == "issue_comment"]
        assert [d.status for d in acked] == [202] * 5
        bot.kill()
        unhandled = "SELECT COUNT(*) FROM deliveries WHERE handled_at IS NULL AND event_type = 'issue_comment'"
        assert bot.query(unhandled) == [(5,)]
        assert bot.query("SELECT COUNT(*) FROM runs") == [(0,)]
        await forge.outage_end()
        await bot.start()
        await wait_for(lambda: bot.query(unhandled) == [(0,)])
        tasks = sorted(t for (t,) in bot.query("SELECT task FROM runs"))
        assert tasks == [f"task {n}" for n in range(5)]
        bot.kill()
        await bot.start()  # a second restart handles nothing twice
        # Recovery queues what it finds before anything new: once a new request is handled, a
        # delivery handled twice would have made a second run already.
        await forge.create_comment(repo, issue.number, bob, "/dispatch codex task 5")
        await wait_for(lambda: bot.query(unhandled) == [(0,)] and bot.query("SELECT COUNT(*) FROM runs") >= [(6,)])
        tasks = sorted(t for (t,) in bot.query("SELECT task FROM runs"))
        assert tasks == [f"task {n}" for n in range(6)]
    finally:
        await bot.stop()
