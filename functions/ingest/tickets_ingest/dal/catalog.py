"""What schema ``tickets`` holds, read from PostgreSQL's catalog (for ``tickets-ingest grants``).

Read as whoever runs the command; names come back quoted as SQL identifiers, ready for GRANT.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickets_ingest.dal.db import Database

SCHEMA = "tickets"

CURRENT_DATABASE = "SELECT quote_ident(current_database())"

# Tables (plain and partitioned) and views, by kind, in name order.
SCHEMA_TABLES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v')
ORDER BY c.relname
"""

SCHEMA_SEQUENCES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relkind = 'S'
ORDER BY c.relname
"""

# Functions with their argument types: GRANT EXECUTE names one overload exactly.
SCHEMA_FUNCTIONS = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname)
       || '(' || pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = :schema AND p.prokind = 'f'
ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)
"""


@dataclass(frozen=True)
class SchemaObjects:
    database: str
    tables: tuple[str, ...]
    sequences: tuple[str, ...]
    functions: tuple[str, ...]


def schema_objects(db: Database, schema: str = SCHEMA) -> SchemaObjects:
    def names(statement: str) -> tuple[str, ...]:
        return tuple(str(row[0]) for row in db.run(statement, schema=schema))

    return SchemaObjects(
        database=str(db.scalar(CURRENT_DATABASE)),
        tables=names(SCHEMA_TABLES),
        sequences=names(SCHEMA_SEQUENCES),
        functions=names(SCHEMA_FUNCTIONS),
    )


def role_identifier(role: str) -> str:
    """``role`` as a quoted SQL identifier (a GRANT names it exactly, whatever its case)."""
    import pg8000.native  # noqa: PLC0415 - only the grants command needs it

    return str(pg8000.native.identifier(role))
