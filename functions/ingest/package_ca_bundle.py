"""Put the database CA bundle into the Lambda package, or fail saying how to supply one.

Run by ``make ca-bundle`` (``sam build``): ``python3 package_ca_bundle.py ARTIFACTS_DIR``.
Standard library only. The function verifies PostgreSQL's certificate against
``/var/task/certs/rds-global-bundle.pem`` (template.yaml: DB_CA_BUNDLE), and RDS
certificates chain to Amazon's own RDS CAs, which no system trust store holds.

Where the bundle comes from, in this order:

- ``RDS_CA_BUNDLE=none``: no bundle, said loudly; deploy such a build only with
  ``DbSslMode=require`` or ``disable`` (the explicit opt-out of verification);
- ``RDS_CA_BUNDLE=https://...``: downloaded at build time; ``RDS_CA_BUNDLE_SHA256`` is
  required (a download is pinned or refused);
- ``RDS_CA_BUNDLE=/absolute/path.pem``: copied; checked against ``RDS_CA_BUNDLE_SHA256``
  when given;
- unset: ``certs/rds-global-bundle.pem`` beside this script, if present, with its SHA-256
  in ``certs/rds-global-bundle.pem.sha256`` (both committed by you; the checksum is required).

Every bundle must load as PEM and hold only CA certificates; its SHA-256 and certificate
count are printed so a reviewer can compare them with the published bundle.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import sys
import urllib.request
from pathlib import Path

TARGET = Path("certs") / "rds-global-bundle.pem"
IN_SOURCE = Path(__file__).resolve().parent / TARGET
PUBLISHED = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
HOW = f"""\
Supply the CA bundle of your database's certificates (for RDS/Aurora: AWS's global bundle,
{PUBLISHED}) in one of these ways:
  RDS_CA_BUNDLE=/absolute/path/to/global-bundle.pem sam build
  RDS_CA_BUNDLE={PUBLISHED} RDS_CA_BUNDLE_SHA256=<its sha256> sam build
  commit functions/ingest/{TARGET} and its `sha256sum` in {TARGET}.sha256
To build without one (deploy only with DbSslMode=require or disable, which do not verify the
certificate): RDS_CA_BUNDLE=none sam build. See docs/deploy.md#build."""


class BundleError(Exception):
    pass


def fetch(spec: str) -> tuple[str, bytes, str | None]:
    """(where it came from, its bytes, the SHA-256 it must have or None)."""
    pinned = os.environ.get("RDS_CA_BUNDLE_SHA256", "").strip().lower() or None
    if not spec:
        if not IN_SOURCE.is_file():
            raise BundleError("no database CA bundle: the package would fail every connection.")
        checksum = IN_SOURCE.with_name(IN_SOURCE.name + ".sha256")
        if not checksum.is_file():
            raise BundleError(f"{TARGET} has no {checksum.name} beside it: record its SHA-256.")
        expected = checksum.read_text(encoding="ascii").split()[0].lower()
        return f"functions/ingest/{TARGET}", IN_SOURCE.read_bytes(), expected
    if spec.startswith("https://"):
        if pinned is None:
            raise BundleError(f"RDS_CA_BUNDLE={spec} is a download: set RDS_CA_BUNDLE_SHA256 too.")
        with urllib.request.urlopen(spec, timeout=60) as response:  # noqa: S310 - https only
            return spec, response.read(), pinned
    if "://" in spec:
        raise BundleError(f"RDS_CA_BUNDLE={spec}: only https:// URLs are accepted.")
    path = Path(spec)
    if not path.is_absolute():
        # sam build runs this in a scratch copy of functions/ingest: a relative path is lost.
        raise BundleError(f"RDS_CA_BUNDLE={spec} must be an absolute path.")
    if not path.is_file():
        raise BundleError(f"RDS_CA_BUNDLE={spec} is not a file.")
    return spec, path.read_bytes(), pinned


def check(source: str, data: bytes, expected: str | None) -> str:
    """The bundle's SHA-256, after checking it is what was pinned and a PEM of CAs only."""
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise BundleError(f"{source} has SHA-256 {digest}, expected {expected}.")
    text = data.decode("ascii", errors="replace")
    count = text.count("-----BEGIN CERTIFICATE-----")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system CAs: only the bundle's
    try:
        context.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError):
        count = 0
    if count == 0:
        raise BundleError(f"{source} is not a PEM file of certificates.")
    authorities = len(context.get_ca_certs())
    if authorities != count:
        raise BundleError(f"{source}: {count - authorities} of {count} certificates are not CAs.")
    return digest


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: package_ca_bundle.py ARTIFACTS_DIR", file=sys.stderr)
        return 2
    spec = os.environ.get("RDS_CA_BUNDLE", "").strip()
    if spec == "none":
        print(
            "WARNING: RDS_CA_BUNDLE=none - no database CA bundle in this package. Deploy it only "
            "with DbSslMode=require or disable; with verify-full or verify-ca every invocation "
            "stops with a configuration error.",
        )  # stdout: `sam build` shows a successful make's stdout only
        return 0
    try:
        source, data, expected = fetch(spec)
        digest = check(source, data, expected)
    except (BundleError, OSError) as exc:
        print(f"sam build: database CA bundle: {exc}\n{HOW}", file=sys.stderr)
        return 1
    target = Path(argv[1]) / TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    count = data.count(b"-----BEGIN CERTIFICATE-----")
    pinned = "matches the pinned value" if expected else "not pinned"
    print(f"CA bundle {source}: {count} CA certificates, SHA-256 {digest} ({pinned}) -> {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
