#!/usr/bin/env bash
# Draws the status page of a running `make run` with headless Chromium, for the
# README's picture:
#
#   make run &                  # let the charts fill for a minute or two
#   scripts/screenshot.sh       # writes docs/status.png
#   scripts/screenshot.sh URL OUT
#
# Needs Debian's chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:-http://127.0.0.1:6060/}
out=${2:-docs/status.png}
chromium=$(command -v chromium || command -v chromium-browser) || {
	echo "screenshot.sh: chromium not found; apt-get install chromium" >&2
	exit 1
}
# --no-sandbox: Chromium's sandbox refuses to run as root.
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
	--window-size=1200,800 --screenshot="$out" "$url" 2>/dev/null
echo "screenshot.sh: wrote $out"
