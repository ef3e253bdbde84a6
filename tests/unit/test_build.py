"""What `sam build` packages (functions/ingest/Makefile): the whole pinned closure, the code,
and the database CA bundle, or a failure that says how to supply one. No network: the CA
step and the code step run for real on temporary files; the pip step is only checked for
what it installs (every pin, nothing unlisted)."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from packaging.markers import default_environment
from packaging.requirements import Requirement

INGEST = Path(__file__).resolve().parents[2] / "functions" / "ingest"
SCRIPT = INGEST / "package_ca_bundle.py"
PACKAGED = Path("certs") / "rds-global-bundle.pem"


# ------------------------------------------------------------------ requirements.txt


def _pins() -> dict[str, tuple[str, set[str]]]:
    pins: dict[str, tuple[str, set[str]]] = {}
    for raw in (INGEST / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{line}: pin exactly"
            pins[_canonical(requirement.name)] = (spec.version, set(requirement.extras))
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_requirements_pin_the_whole_closure_for_the_lambda_runtime() -> None:
    """The Makefile installs with --no-deps: a dependency missing here would be missing in
    the package. Each pinned package's own requirements, for python3.13 on Linux, are pinned
    too (read from the installed distributions, which are these exact versions)."""
    pins = _pins()
    target = {**default_environment(), "python_version": "3.13", "sys_platform": "linux"}
    target |= {"python_full_version": "3.13.0", "platform_system": "Linux"}
    for name, (version, extras) in pins.items():
        dist = metadata.distribution(name)
        assert dist.version == version, f"{name}: installed {dist.version}, pinned {version}"
        for raw in dist.requires or []:
            needed = Requirement(raw)
            wanted = any(
                needed.marker is None or needed.marker.evaluate({**target, "extra": extra})
                for extra in extras | {""}
            )
            if wanted:
                assert _canonical(needed.name) in pins, f"{name} needs {raw}: not pinned"
                assert needed.specifier.contains(pins[_canonical(needed.name)][0]), raw


def test_pyproject_runtime_dependencies_are_pinned_alike() -> None:
    text = (INGEST.parents[1] / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    pins = _pins()
    for line in re.findall(r'"([^"]+)"', block):
        requirement = Requirement(line)
        assert pins[_canonical(requirement.name)][0] == str(requirement.specifier)[2:]


# ------------------------------------------------------------------ the CA bundle


def _certificate(common_name: str, *, ca: bool) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "global-bundle.pem"
    path.write_bytes(_certificate("Test RDS Root CA 1", ca=True) + _certificate("CA 2", ca=True))
    return path


def package(artifacts: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RDS_CA_BUNDLE")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(artifacts)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_no_bundle_fails_and_says_how_to_supply_one(tmp_path: Path) -> None:
    result = package(tmp_path)
    assert result.returncode == 1
    assert "no database CA bundle" in result.stderr
    assert "RDS_CA_BUNDLE=/absolute/path/to/global-bundle.pem sam build" in result.stderr
    assert "RDS_CA_BUNDLE=none" in result.stderr and "DbSslMode=require or disable" in result.stderr
    assert not (tmp_path / PACKAGED).exists()


def test_a_supplied_bundle_is_packaged_with_its_checksum(tmp_path: Path, bundle: Path) -> None:
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    result = package(tmp_path, RDS_CA_BUNDLE=str(bundle), RDS_CA_BUNDLE_SHA256=digest)
    assert result.returncode == 0, result.stderr
    assert f"2 CA certificates, SHA-256 {digest} (matches the pinned value)" in result.stdout
    assert (tmp_path / PACKAGED).read_bytes() == bundle.read_bytes()


def test_a_checksum_mismatch_fails(tmp_path: Path, bundle: Path) -> None:
    result = package(tmp_path, RDS_CA_BUNDLE=str(bundle), RDS_CA_BUNDLE_SHA256="0" * 64)
    assert result.returncode == 1
    assert f"expected {'0' * 64}" in result.stderr
    assert not (tmp_path / PACKAGED).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a certificate\n", "is not a PEM file of certificates"),
        (None, "1 of 1 certificates are not CAs"),
    ],
)
def test_a_bundle_that_is_not_a_set_of_cas_fails(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content or _certificate("db.example.com", ca=False))
    result = package(tmp_path / "out", RDS_CA_BUNDLE=str(path))
    assert result.returncode == 1
    assert message in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("certs/global-bundle.pem", "must be an absolute path"),
        ("http://example.com/bundle.pem", "only https:// URLs"),
        ("https://example.com/bundle.pem", "set RDS_CA_BUNDLE_SHA256 too"),
    ],
)
def test_unsafe_or_lost_sources_are_refused(tmp_path: Path, spec: str, message: str) -> None:
    result = package(tmp_path, RDS_CA_BUNDLE=spec)
    assert result.returncode == 1
    assert message in result.stderr


def test_opting_out_is_explicit_and_loud(tmp_path: Path) -> None:
    result = package(tmp_path, RDS_CA_BUNDLE="none")
    assert result.returncode == 0
    assert "WARNING: RDS_CA_BUNDLE=none" in result.stdout
    assert "DbSslMode=require or disable" in result.stdout
    assert not (tmp_path / PACKAGED).exists()


def test_the_code_step_packages_app_and_package_without_caches(tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(INGEST), "code", f"ARTIFACTS_DIR={tmp_path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app.py").is_file()
    assert (tmp_path / "tickets_ingest" / "dal" / "migrations" / "0001_initial.sql").is_file()
    assert (tmp_path / "tickets_ingest" / "data" / "aliases.csv").is_file()
    assert not list(tmp_path.rglob("__pycache__"))
    assert not (tmp_path / "package_ca_bundle.py").exists()
