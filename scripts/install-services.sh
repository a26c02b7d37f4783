#!/usr/bin/env bash
# Debian packages the integration tests need: a real ClickHouse server (and client),
# Prometheus' promtool, Alertmanager, docker-compose (offline validation of the stack) and Chromium
# (renders the HTML report). Installs only what is missing.
set -euo pipefail
need=()
command -v clickhouse-server >/dev/null 2>&1 || need+=(clickhouse-server clickhouse-client)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    echo "install-services: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-services: clickhouse-server $(clickhouse-server --version 2>/dev/null | grep -o '[0-9.]*' | head -1) ready"
