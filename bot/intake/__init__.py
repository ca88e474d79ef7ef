"""The way in: a webhook delivery verified (``webhook``), parsed (``payloads``), recorded, then handed
to its handlers (``routing``) by the worker that reads recorded deliveries (``deliveries``); the slash
commands in comments are parsed by ``commands``."""
