#!/usr/bin/env bash
# Install Debian's postgresql for tests/integration/test_sweep_storage.py, which starts a
# throwaway server (initdb in a temporary folder, as the postgres user the package creates,
# on a free 127.0.0.1 port) to test two sweep processes sharing one Optuna study.
# Needs root for apt-get; does nothing when a PostgreSQL server is already there.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
echo "installing postgresql"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
