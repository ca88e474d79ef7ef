"""The bot's webhook handlers: plain async functions ``(event, services)``, one module per feature."""

from bot.intake.routing import Router

from handlers import comments, labels, pulls

router = Router(labels.router, comments.router, pulls.router)
