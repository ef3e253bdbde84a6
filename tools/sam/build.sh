#!/usr/bin/env bash
# Lint and build the SAM application: tools/sam/build.sh [extra `sam build` arguments]
#
# 1. creates .venv-sam/ (its own virtualenv: aws-sam-cli pins boto3/botocore/pydantic
#    versions that must not leak into .venv) with the pinned tools below, or updates it
#    when the pins change;
# 2. finds a python3.13 (the function's runtime; `sam build` without a container needs
#    it on PATH): $SAM_PYTHON, a working python3.13 on PATH, pyenv's 3.13.x, or the usual
#    system locations;
# 3. runs cfn-lint (errors, warnings and informational findings all fail the build),
#    `sam validate --lint`, then `sam build` into .aws-sam/build;
# 4. puts the RDS CA bundle into the package as certs/rds-global-bundle.pem (RDS_CA_BUNDLE,
#    see below: required, because the function only connects with a verified certificate).
# Offline apart from the first pip install (and RDS_CA_BUNDLE=download); needs no AWS
# credentials.
set -euo pipefail

AWS_SAM_CLI_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0
PINS="aws-sam-cli==${AWS_SAM_CLI_VERSION} cfn-lint==${CFN_LINT_VERSION}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${SAM_VENV:-$ROOT/.venv-sam}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# --- the tools' own virtualenv ---------------------------------------------------------
if [[ ! -x "$VENV/bin/sam" || ! -x "$VENV/bin/cfn-lint" || "$(cat "$VENV/.pins" 2>/dev/null)" != "$PINS" ]]; then
    VENV_PYTHON="${SAM_VENV_PYTHON:-python3}"
    command -v "$VENV_PYTHON" >/dev/null || die "no $VENV_PYTHON to create $VENV (set SAM_VENV_PYTHON)"
    say "installing $PINS into $VENV"
    [[ -x "$VENV/bin/python" ]] || "$VENV_PYTHON" -m venv "$VENV"
    # shellcheck disable=SC2086  # PINS is a list of requirement specifiers
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS
    printf '%s' "$PINS" >"$VENV/.pins"
fi

# --- a python3.13 for `sam build` ---------------------------------------------------------
works() { [[ -n "$1" ]] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; }

find_python313() {
    local candidate root
    if [[ -n "${SAM_PYTHON:-}" ]]; then
        works "$SAM_PYTHON" && { echo "$SAM_PYTHON"; return; }
        die "SAM_PYTHON=$SAM_PYTHON is not a working Python 3.13"
    fi
    candidate="$(command -v python3.13 || true)"
    works "$candidate" && { echo "$candidate"; return; }
    # pyenv: the bare shim only works with PYENV_VERSION set; use the real binary instead.
    root="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
    for candidate in $(ls -d "$root"/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV) \
        /usr/local/bin/python3.13 /usr/bin/python3.13; do
        works "$candidate" && { echo "$candidate"; return; }
    done
    return 1
}

PY313="$(find_python313)" || die "no Python 3.13 found: install one (e.g. pyenv install 3.13) or set SAM_PYTHON"
# The real interpreter (not a shim), so that `python3.13` on PATH resolves without pyenv.
PY313_REAL="$("$PY313" -c 'import sys; print(sys.executable)')"
PY313_DIR="$(dirname "$PY313_REAL")"
[[ -x "$PY313_DIR/python3.13" ]] || die "$PY313_DIR has no python3.13 executable"
export PATH="$PY313_DIR:$VENV/bin:$PATH"
say "python3.13 for sam build: $PY313_REAL"

# --- the RDS CA bundle: decided before building, put into the package after ---------------
# RDS certificates chain to Amazon's own RDS CAs, which no system trust store holds.
# RDS_CA_BUNDLE=/path/to/global-bundle.pem  copy that file (recommended: a reviewed copy)
# RDS_CA_BUNDLE=download                    fetch it from Amazon's RDS trust store
# RDS_CA_BUNDLE=none                        build without it (checks only: the function
#                                           refuses to connect without a verified certificate)
CA_URL="https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
CA_IN_SOURCE="$ROOT/functions/ingest/certs/rds-global-bundle.pem"
CA_MODE="${RDS_CA_BUNDLE:-}"
if [[ -s "$CA_IN_SOURCE" ]]; then
    CA_MODE=source
elif [[ -z "$CA_MODE" ]]; then
    die "set RDS_CA_BUNDLE to the RDS CA bundle (a path, 'download' or 'none'); see docs/deploy.md"
elif [[ "$CA_MODE" != none && "$CA_MODE" != download ]]; then
    [[ -s "$CA_MODE" ]] || die "RDS_CA_BUNDLE=$CA_MODE is not a file"
fi

# --- lint, validate, build -----------------------------------------------------------------
export SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-${AWS_REGION:-eu-west-1}}"

say "cfn-lint $CFN_LINT_VERSION"
"$VENV/bin/cfn-lint" --include-checks I -- template.yaml

say "sam validate --lint"
"$VENV/bin/sam" validate --lint --template-file template.yaml

say "sam build"
"$VENV/bin/sam" build --template-file template.yaml "$@"

# --- the RDS CA bundle into the package (DB_CA_BUNDLE in template.yaml) --------------------
ARTIFACT_DIR="$ROOT/.aws-sam/build/IngestFunction"
CA_TARGET="$ARTIFACT_DIR/certs/rds-global-bundle.pem"
[[ -d "$ARTIFACT_DIR" ]] || die "sam build left no $ARTIFACT_DIR"
case "$CA_MODE" in
    source)
        say "RDS CA bundle: shipped with the source (functions/ingest/certs/)" ;;
    none)
        say "WARNING: no RDS CA bundle in the package (RDS_CA_BUNDLE=none): do not deploy this build" ;;
    download)
        mkdir -p "$(dirname "$CA_TARGET")"
        say "downloading $CA_URL"
        curl --fail --silent --show-error --location --max-time 60 -o "$CA_TARGET" "$CA_URL" ;;
    *)
        mkdir -p "$(dirname "$CA_TARGET")"
        cp "$CA_MODE" "$CA_TARGET" ;;
esac
if [[ -f "$CA_TARGET" ]]; then
    # It must load as a CA file: fail the build here rather than the function in AWS.
    if ! python3.13 -c 'import ssl, sys; ssl.create_default_context(cafile=sys.argv[1])' \
        "$CA_TARGET" 2>/dev/null; then
        rm -f "$CA_TARGET"
        die "the RDS CA bundle ($CA_MODE) is not a PEM certificate file"
    fi
    say "RDS CA bundle: $CA_TARGET ($(grep -c 'BEGIN CERTIFICATE' "$CA_TARGET") certificates)"
fi
say "built: .aws-sam/build (deploy: .venv-sam/bin/sam deploy --config-env default|prod)"
