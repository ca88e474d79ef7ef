"""The model gateway: the only thing an agent container can reach (issue #14).

``observer`` is the seam other packages plug into (usage metering, budgets); ``grants`` holds the
per-run tokens; ``server`` forwards model calls and tunnels allowed CONNECTs; ``network`` is the
bot's own Docker network with no route out.
"""
