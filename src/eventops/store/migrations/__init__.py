"""The metadata store's Alembic history, shipped inside the package.

`Store.upgrade()` builds the Alembic configuration in code from these constants, so an
installed EventOps needs no alembic.ini and no working directory of its own.
"""

from __future__ import annotations

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent

# Not Alembic's default "alembic_version": the metadata store may share a PostgreSQL database
# with other Alembic users (the MLflow tracking server is one), and each history needs its own.
VERSION_TABLE = "eventops_alembic_version"
