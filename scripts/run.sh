#!/usr/bin/env bash
# Set up moodwire (runtime only) and run the embedded pipeline on the bundled sample stream.
# Extra arguments go to `moodwire run` (e.g. scripts/run.sh --exit-when-done).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/moodwire run "$@"
