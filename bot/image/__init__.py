"""The agent image: its recipe (``recipe``), its builder (``build``) and the ``image`` command (``command``)."""
