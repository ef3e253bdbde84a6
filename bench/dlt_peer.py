"""The peer in the benchmark: dlt's merge of the same CSV into PostgreSQL.

Runs in its own environment (`make bench-dlt-env` creates .venv-dlt); prints one JSON line
with the seconds `pipeline.run` took. Not part of the package: dlt is not a dependency.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections.abc import Iterator

import dlt  # type: ignore[import-not-found]


def rows(path: str) -> Iterator[dict[str, str | None]]:
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if record.get("is_alarm", "").strip().lower() == "true":
                continue
            yield {k: (v if v != "" else None) for k, v in record.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--fresh", action="store_true", help="drop the dataset first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name="tickets_peer",
            destination=dlt.destinations.postgres(credentials=args.dsn),
            dataset_name="dlt_peer",
            pipelines_dir=pipelines_dir,
        )
        if args.fresh:
            with pipeline.sql_client() as client:
                client.execute_sql("DROP SCHEMA IF EXISTS dlt_peer CASCADE")
                client.execute_sql("DROP SCHEMA IF EXISTS dlt_peer_staging CASCADE")
        resource = dlt.resource(
            rows(args.csv), name="incidents", write_disposition="merge", primary_key="ticket_id"
        )
        clock = time.perf_counter()
        pipeline.run(resource)
        print(json.dumps({"seconds": time.perf_counter() - clock}))


if __name__ == "__main__":
    main()
