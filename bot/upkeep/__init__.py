"""Upkeep on timers: sweep finished workspaces, reap stray containers, reconcile the Forge, trim the
store's history (``sweeper``)."""
