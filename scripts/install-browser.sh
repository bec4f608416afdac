#!/usr/bin/env bash
# Install what the browser test (tests/test_ui_browser.py) needs: Debian's Chromium and the Python
# playwright package that drives it. Never `playwright install` (its CDN is unreachable here).
#
#   scripts/install-browser.sh [VENV_PYTHON]     (default: .venv/bin/python)
#
# Idempotent: does nothing when both are already there. Never fails the caller: when apt or pip
# cannot install, it prints a warning and exits 0, and the browser test skips.
set -uo pipefail

PY="${1:-.venv/bin/python}"
PLAYWRIGHT_VERSION="1.65.2"

warn() { echo "install-browser: warning: $*; the browser test will be skipped" >&2; }

have_chromium() {
    [ -x /usr/lib/chromium/chromium ] || [ -x /usr/lib/chromium/chromium-headless-shell ]
}
have_playwright() {
    "$PY" -c "import playwright, importlib.metadata as m; \
assert m.version('playwright') == '$PLAYWRIGHT_VERSION'" >/dev/null 2>&1
}

if [ ! -x "$PY" ]; then
    warn "no Python at $PY"
    exit 0
fi

if have_chromium; then
    echo "install-browser: chromium already installed"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "apt-get is not available"
    elif [ "$SUDO" = "none" ]; then
        warn "not root and no passwordless sudo for apt-get"
    else
        echo "install-browser: installing chromium with apt-get (about a minute)"
        LOG="$(mktemp)"
        if ! { $SUDO apt-get update -qq \
               && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
                  chromium fonts-liberation; } >"$LOG" 2>&1; then
            tail -n 20 "$LOG" >&2
            warn "apt-get could not install chromium"
        fi
        rm -f "$LOG"
    fi
fi

if have_playwright; then
    echo "install-browser: playwright $PLAYWRIGHT_VERSION already installed"
elif ! "$PY" -m pip install -q "playwright==$PLAYWRIGHT_VERSION"; then
    warn "pip could not install playwright==$PLAYWRIGHT_VERSION"
fi

if have_chromium && have_playwright; then
    echo "install-browser: ready (chromium + playwright $PLAYWRIGHT_VERSION)"
fi
exit 0
