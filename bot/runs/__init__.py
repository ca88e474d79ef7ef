"""Runs: claimed and supervised (``runner``), their agents (``agents``, ``preflight``), what the agent
is told (``prompt``), its containers (``containers``), its final message (``final_message``), dry runs
(``dryrun``), and the stages around the agent (``pipeline``)."""
