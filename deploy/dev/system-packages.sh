#!/usr/bin/env bash
# The Debian packages `make run` and `make test` need, installed only when missing (apt-get, as root or via sudo):
#   python3.11 python3.11-venv  the virtualenv the Makefile builds (skipped when a python3.11 with venv is on PATH)
#   unixodbc tdsodbc            the QuoteWerks SQL Server driver chain (pyodbc → unixODBC → FreeTDS) of the
#                               [mssql] extra, which the test suite loads
#   prometheus                  promtool: the deployment tests check the Prometheus config and alert rules with it
#   prometheus-alertmanager     amtool: the deployment tests check the Alertmanager config and its routes with it
#   redis-server                the shared rate budget's tests stop and start a Redis of their own (the machine's
#                               Redis on 127.0.0.1:6379 serves the others)
set -euo pipefail

python="${PYTHON:-python3.11}"
missing=()
if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3.11 python3.11-venv)
fi
if ! odbcinst -q -d -n FreeTDS >/dev/null 2>&1; then
  missing+=(unixodbc tdsodbc)
fi
if ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
if ! command -v amtool >/dev/null 2>&1; then
  missing+=(prometheus-alertmanager)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server)
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing ${missing[*]} and this is not a Debian/Ubuntu machine (no apt-get): install them by hand" >&2
  exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "error: missing Debian packages ${missing[*]}: run 'apt-get install ${missing[*]}' as root" >&2
    exit 1
  fi
  as_root=(sudo)
fi
echo "installing the Debian packages this project needs: ${missing[*]}"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
