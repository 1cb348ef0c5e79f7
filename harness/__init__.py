"""Shared by the test suite and the benchmarks (not shipped): throwaway PostgreSQL servers,
generated migration histories and fault injection."""
