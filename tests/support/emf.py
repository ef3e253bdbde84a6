"""The CloudWatch EMF documents a handler printed, read back for assertions."""

from __future__ import annotations

import json
from typing import Any


def emf_documents(out: str, dataset: str) -> list[dict[str, Any]]:
    """The EMF documents printed for ``dataset``, each metric as one number."""
    documents = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            if document.get("dataset") == dataset:
                documents.append(
                    {
                        k: v[0] if isinstance(v, list) and len(v) == 1 else v
                        for k, v in document.items()
                    }
                )
    return documents
