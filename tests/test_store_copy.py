"""`dispatchbot store copy`: a SQLite store moved into PostgreSQL keeps its history and its dedup keys."""

import subprocess
import sys
import time
from pathlib import Path

from bot.store import PostgresStore, RunResult, SqliteStore
from tests.test_store import request

ROOT = Path(__file__).resolve().parents[1]


def store_copy(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "DISPATCHBOT_CONFIG": "/nonexistent"}
    return subprocess.run([sys.executable, "-m", "bot.cli", "store", "copy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_a_copied_store_goes_on_where_the_sqlite_one_stopped(tmp_path, postgres_url):
    path = tmp_path / "dispatchbot.sqlite3"
    lite = await SqliteStore.open(path)
    assert await lite.record_delivery("d1", "issue_comment", b'{"x": 1}')
    done = await lite.request_run(request(1, pool="fast"), trigger_key="comment:1", delivery_id="d1")
    [claimed] = await lite.claim(max_running=4, pool_limits={}, spawn_intervals={})
    await lite.transition(claimed.id, "running", container_id="c1")
    await lite.transition(done.id, "completed", result=RunResult(pushed=True))
    waiting = await lite.request_run(request(2, agent="claude"), trigger_key="label:2")
    await lite.assign_branch(waiting.id, ["agent/two"])
    await lite.enqueue("reply:1", "comment", "acme", "widgets", 1, {"body": "done"}, run_id=done.id)
    await lite.set_reported(done.id, "comment_id", 77)
    await lite.set_reported(done.id, "version", (await lite.get(done.id)).version)
    await lite.record_outcome("claude", quick_failure=True, threshold=1, pause=600.0)
    await lite.set_pool_frozen("fast", True)
    await lite.set_flag("frozen", "1")
    before = {
        "runs": await lite.runs(), "history": await lite.history(done.id), "pools": await lite.pools(),
        "reported": await lite.reported(done.id), "outbox": await lite.due_outbox(),
    }
    await lite.close()

    copied = store_copy("--from", str(path), "--to", postgres_url)
    assert copied.returncode == 0, copied.stderr
    assert "2 runs" in copied.stdout and "1 deliveries" in copied.stdout

    pg = await PostgresStore.open(postgres_url)
    try:
        after = {
            "runs": await pg.runs(), "history": await pg.history(done.id), "pools": await pg.pools(),
            "reported": await pg.reported(done.id), "outbox": await pg.due_outbox(),
        }
        assert after == before
        assert await pg.flag("frozen") == "1"
        # The dedup keys came along: a redelivery, a repeated trigger and a repeated Forge write do nothing.
        assert not await pg.record_delivery("d1", "issue_comment", b"{}")
        assert await pg.request_run(request(1), trigger_key="comment:1") is None
        assert not await pg.enqueue("reply:1", "comment", "acme", "widgets", 1, {"body": "again"})
        assert await pg.runs_to_report() == [await pg.get(waiting.id)]
        # New rows are numbered after the copied ones.
        new = await pg.request_run(request(3), trigger_key="comment:3")
        assert new.id == waiting.id + 1
        assert (await pg.pool("claude")).paused_until > time.time()
    finally:
        await pg.close()

    again = store_copy("--from", str(path), "--to", postgres_url)
    assert again.returncode == 2 and "already holds" in again.stderr and "nothing was copied" in again.stderr


def test_store_copy_says_what_is_wrong_with_its_arguments(tmp_path):
    missing = store_copy("--from", str(tmp_path / "none.sqlite3"), "--to", "postgresql://x@127.0.0.1:1/x")
    assert missing.returncode == 2 and "no such SQLite store" in missing.stderr
    not_pg = store_copy("--from", str(tmp_path / "none.sqlite3"), "--to", str(tmp_path / "other.sqlite3"))
    assert not_pg.returncode == 2 and "must be a postgresql:// URL" in not_pg.stderr
