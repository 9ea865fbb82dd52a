"""Alembic migrations; run them with `hotline migrate`."""
