#!/bin/bash
# A read-only ClickHouse user for Grafana and analysts (the services write as `moodwire`).
# The Grafana plugin sets max_execution_time per query, which readonly=1 forbids unless allowed.
set -euo pipefail
clickhouse-client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_password BY '${ANALYST_PASSWORD}'
    SETTINGS readonly = 1, max_execution_time = 60 CHANGEABLE_IN_READONLY;
GRANT SELECT ON moodwire.* TO analyst;
SQL
