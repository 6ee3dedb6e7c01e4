#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Rust unit and integration tests (the store's crash
# test among them), then the real-client suite (awscli, boto3, the AWS SDK for JavaScript) against
# the built binary.
# Extra arguments go to pytest, e.g. ./test.sh -k sts -x
set -euo pipefail
cd "$(dirname "$0")"

# Outside the clone, so that every clone (and CI) reuses compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stratus/target}"

cargo build --release --locked -p stratus
cargo test --workspace --locked

# The Python clients, in a venv keyed by the requirements, made once per machine.
requirements=tests/requirements.txt
venv="$HOME/.cache/stratus/venv-$(sha256sum "$requirements" | cut -c1-12)"
if [ ! -x "$venv/bin/pytest" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
fi

# SQS's query-protocol model, from a botocore of before SQS spoke JSON: the suite drives SQS through
# both protocols (stratus_harness.LEGACY_SQS_MODEL).
export STRATUS_LEGACY_SQS_MODEL="${STRATUS_LEGACY_SQS_MODEL:-$HOME/.cache/stratus/botocore-1.31.0-sqs}"
legacy_sqs="$STRATUS_LEGACY_SQS_MODEL"
if [ ! -f "$legacy_sqs/sqs/2012-11-05/service-2.json" ]; then
    rm -rf "$legacy_sqs.new" && mkdir -p "$legacy_sqs.new"
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: botocore==1.31.0 -d "$legacy_sqs.new"
    "$venv/bin/python" - "$legacy_sqs.new" <<'EOF'
import pathlib, sys, zipfile
folder = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(next(folder.glob("botocore-*.whl"))) as wheel:
    target = folder / "sqs/2012-11-05/service-2.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(wheel.read("botocore/data/sqs/2012-11-05/service-2.json"))
EOF
    rm -f "$legacy_sqs.new"/*.whl
    rm -rf "$legacy_sqs" && mv "$legacy_sqs.new" "$legacy_sqs"
fi

# The JavaScript SDK, in a folder keyed by its lockfile, made once per machine.
js="$HOME/.cache/stratus/js-$(cat tests/sdk-js/package.json tests/sdk-js/package-lock.json | sha256sum | cut -c1-12)"
if [ ! -d "$js/node_modules" ]; then
    rm -rf "$js" "$js.new"
    mkdir -p "$js.new"
    cp tests/sdk-js/package.json tests/sdk-js/package-lock.json "$js.new/"
    npm ci --prefix "$js.new" --no-audit --no-fund --silent
    mv "$js.new" "$js"
fi

NODE_PATH="$js/node_modules" STRATUS_BIN="$CARGO_TARGET_DIR/release/stratus" "$venv/bin/python" -m pytest tests "$@"
