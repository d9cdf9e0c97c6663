#!/usr/bin/env bash
# Build the frontend bundle and its SBOM into dist/<version>/.
exec "$(dirname "$0")/../.venv/bin/nox" -s build -- --only frontend "$@"
