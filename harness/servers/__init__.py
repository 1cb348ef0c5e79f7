"""Servers and SQL: throwaway PostgreSQL clusters (``pgcluster``), the example apps under
uvicorn and gunicorn (``apps``), and one-shot SQL from outside the runner (``sql``)."""
