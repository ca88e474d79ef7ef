"""The bot's labels on the Forge: each created once in a repository, also by replicas side by side.

Gitea accepts two labels of one name in a repository (the fake Forge does too), so two replicas
that both found ``dispatch/running`` missing would each create one, and the repository would show
it twice from then on.
"""

from __future__ import annotations

import asyncio

import aiohttp

from bot.forge.client import Forge
from bot.forge.paths import Repo
from bot.report.labels import Labels
from bot.store import open_store


async def test_two_replicas_missing_one_label_at_once_create_it_once(world):
    forge, repo = world["forge"], world["repo"]
    store = await open_store(world["tmp"] / "store.sqlite3")
    try:
        async with aiohttp.ClientSession() as http:
            client = Forge(http, forge.url, world["bot"].token)
            replicas = [Labels(client, store, name) for name in ("bot-1", "bot-2", "bot-3")]
            widgets = Repo("acme", "widgets")
            ids = await asyncio.gather(*(labels.id(widgets, "dispatch/running") for labels in replicas))
            [label] = [lb for lb in forge.state.repo_labels(repo) if lb.name == "dispatch/running"]
            assert ids == [label.id] * 3
            posted = [r for r in forge.requests if r.method == "POST" and r.path.endswith("/labels")]
            assert len(posted) == 1
            asked = len(forge.requests)
            assert await replicas[0].id(widgets, "dispatch/running") == label.id
            assert len(forge.requests) == asked  # remembered
    finally:
        await store.close()
