"""Faults and generated histories: a migration history of every kind a mature project keeps
(``history``) and the harness that kills, terminates or restarts runs of it and checks
what a rerun leaves (``trials``; ``python -m harness.faults`` from the command line)."""
