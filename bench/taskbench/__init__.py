"""The project that ``bench/tasks.py`` runs: its settings (one set per system, from
the environment) and its no-op task. Workers run it with ``python -m django``."""
