#!/usr/bin/env bash
# The whole check: lint, format, types, then every test. .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/services.sh   # RabbitMQ and PostgreSQL: integration tests use the real ones
./scripts/browser.sh    # Debian's Chromium for the dashboard's browser test
export PATH="$PWD/.venv/bin:$PATH"

echo "==> ruff check";  ruff check .
echo "==> ruff format"; ruff format --check .
echo "==> mypy";        mypy
echo "==> lint-imports"; lint-imports --no-cache   # the layers' contracts (pyproject.toml, docs/architecture.md)
echo "==> pytest"
mkdir -p test-artifacts
# -p no:cacheprovider: CI runs from a fresh clone; nothing to reuse.
pytest -p no:cacheprovider "$@"
