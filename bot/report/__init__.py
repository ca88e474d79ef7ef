"""What the Forge shows of the store's state: the reporter (``reporter``), the pull request, review and
commit status a run leaves (``publish``), the issue's stopwatch (``stopwatch``), a run's Forge links
(``links``), and every sentence the bot says (``sentences``)."""
