"""The operator's side: one set of operations (``operations``) behind the admin API (``api``), the CLI's
client (``client``) and MCP (``mcp_server``); ``doctor``; the one bearer-token check (``tokens``); the read-only
dashboard (``dashboard``, its HTML in ``dashboard_html``) and the metrics (``metrics``)."""
