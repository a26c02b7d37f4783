#!/usr/bin/env bash
# Create .venv and install moodwire into it. Usage: scripts/setup.sh [EXTRAS], e.g. "train,dev".
# A failed install stops here with pip's own message: nothing is swallowed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip \
    || echo "setup: could not upgrade pip; going on with $(.venv/bin/python -m pip --version)" >&2
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
# torch is pinned to 2.13.0 in the train extra: that CPU wheel is on local disk; anything else
# would download a multi-GB CUDA build.
log=$(mktemp)
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" >"$log" 2>&1; then
    grep -v -E "^WARNING: Location .* is ignored" "$log" >&2 || true
    rm -f "$log"
    echo "setup: pip could not install moodwire${extras:+ with the extras $extras} (see above)" >&2
    exit 1
fi
rm -f "$log"
.venv/bin/python -c "import moodwire, scorer, ingest, alerting" \
    || { echo "setup: moodwire failed to install" >&2; exit 1; }
echo "setup: moodwire installed in .venv (extras: ${extras:-none})"
