"""Containers: ``docker`` runs them, ``spec`` says what a run's containers are and how they are found."""
