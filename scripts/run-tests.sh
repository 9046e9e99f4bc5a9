#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine (Python 3.11 + pip + gcc), then runs them.
# torch comes first and pinned: torch==2.13.0 is the CPU build; any other request may pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[test]" "PySide6-Essentials==6.11.3"
# The real-application test needs a virtual X server; install it where we may (root + apt), skip the test otherwise.
if ! command -v Xvfb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb imagemagick x11-utils \
     libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
     libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libegl1 libgl1 libfontconfig1 libdbus-1-3 \
     >/dev/null) || echo "warning: could not install Xvfb; the real-application test will be skipped"
fi
python3 -m pytest -q tests "$@"
