"""Shared by the test suite and the benchmarks (not shipped), one subpackage per job:
``servers`` (throwaway PostgreSQL clusters, app servers, one-shot SQL), ``faults``
(generated migration histories and the fault harness that kills runs of them) and
``image`` (the container image's Dockerfile replayed on a bare Debian root)."""
