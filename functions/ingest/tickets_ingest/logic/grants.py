"""The GRANT statements the runtime role needs: DML on schema ``tickets``, no DDL.

``tickets-ingest grants --role NAME`` prints them for the database it connects to (run it as
the schema owner after ``tickets-ingest migrate``). They are read from the catalog, so a
migration that adds a table or a function is covered the next time they are printed.
"""

from __future__ import annotations

from tickets_ingest.dal.catalog import SchemaObjects, role_identifier, schema_objects
from tickets_ingest.errors import ConfigError, IngestError
from tickets_ingest.logic.runtime import Runtime

# Only read by the runtime (the migration check); every other table is written.
READ_ONLY_TABLES = {"tickets.schema_migrations"}


def runtime_grants(runtime: Runtime, role: str) -> list[str]:
    """The statements for ``role``, one per line (comments start with ``--``)."""
    if not role.strip():
        raise ConfigError("--role is empty: name the function's database role")
    objects = schema_objects(runtime.db())
    if not objects.tables:
        raise IngestError("schema tickets has no tables: run `tickets-ingest migrate` first")
    return grant_statements(objects, role_identifier(role))


def grant_statements(objects: SchemaObjects, role: str) -> list[str]:
    written = [t for t in objects.tables if t not in READ_ONLY_TABLES]
    read = [t for t in objects.tables if t in READ_ONLY_TABLES]
    lines = [
        f"-- The runtime role {role} of tickets-ingest: DML on schema tickets, no DDL.",
        "-- Run as the schema owner after `tickets-ingest migrate` (again after each migrate).",
        "-- TEMPORARY: each file is staged in temporary tables before its upsert.",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {objects.database} TO {role};",
        f"GRANT USAGE ON SCHEMA tickets TO {role};",
    ]
    if read:
        lines.append("-- The migration check only reads the applied versions.")
        lines.append(f"GRANT SELECT ON TABLE {', '.join(read)} TO {role};")
    if written:
        dml = "SELECT, INSERT, UPDATE, DELETE"
        lines.append(f"GRANT {dml} ON TABLE {', '.join(written)} TO {role};")
    if objects.sequences:
        lines.append(f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(objects.sequences)} TO {role};")
    if objects.functions:
        lines.append(f"GRANT EXECUTE ON FUNCTION {', '.join(objects.functions)} TO {role};")
    lines += [
        "-- Optional, for taking over a silent sync (its lease heartbeat stopped): the next",
        "-- sync ends its session with pg_terminate_backend, identified by pid AND",
        "-- backend_start. A role may always see and end its own sessions; when syncs connect",
        "-- as different roles (e.g. an operator's own role), each needs both of these.",
        f"-- GRANT pg_signal_backend TO {role};",
        f"-- GRANT pg_read_all_stats TO {role};",
    ]
    return lines
