"""The names of the schema migrations, in order: read at start-up without importing SQLAlchemy.

`registry.db.migrations.MIGRATIONS` must list the same names (a test checks it).
"""

MIGRATION_NAMES: tuple[str, ...] = (
    "001_initial",
    "002_version_listing_index",
    "003_lifecycle",
    "004_version_compat",
)
