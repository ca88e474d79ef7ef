"""A run's work around its agent, as stages: prepare → agent → judge → QA → harvest (``flow`` orders them)."""
