#!/bin/bash
# A read-only ClickHouse user for Grafana and analysts (the services write as `moodwire`).
set -euo pipefail
clickhouse-client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_password BY '${ANALYST_PASSWORD}'
    SETTINGS readonly = 1;
GRANT SELECT ON moodwire.* TO analyst;
SQL
