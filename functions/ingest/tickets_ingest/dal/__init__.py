"""Data access: PostgreSQL (pg8000) and S3 (boto3). Thin adapters, no business rules."""
