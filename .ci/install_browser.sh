#!/usr/bin/env bash
# The dashboard's real-browser test (tests/apps/test_dashboard_browser.py, marked slow) drives
# Debian's chromium with Playwright's Python package (executable_path=/usr/bin/chromium; no
# `playwright install`, which would download a browser). Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
if ! "$VENV/bin/python" -c "import playwright" >/dev/null 2>&1; then
    "$VENV/bin/pip" install -q "playwright==1.65.2"
fi
chromium --version 2>/dev/null
