#!/usr/bin/env bash
# Build the backend's wheel, sdist, locked requirements and SBOM into dist/<version>/.
exec "$(dirname "$0")/../.venv/bin/nox" -s build -- --only backend "$@"
