#!/usr/bin/env bash
# Render pages of the built book in headless Chromium, one PNG per page, for a visual check
# (tables readable, math rendered by the vendored MathJax, navigation complete).
#
#   make book && book/screenshots.sh                 # every page (notebook pages included)
#   book/screenshots.sh method results               # chosen pages (names without .html)
#   OUT=shots WIDTH=1280 HEIGHT=2400 book/screenshots.sh intro
#
# Needs a Chromium (Debian: apt-get install -y chromium). Pages are opened as file:// URLs, so this
# also checks that the site works without a web server and without a network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
html="$here/_build/html"
out="${OUT:-$here/_build/screenshots}"
width="${WIDTH:-1280}"
height="${HEIGHT:-2000}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "no chromium found (Debian: apt-get install -y chromium)" >&2; exit 1; }
[ -d "$html" ] || { echo "no built site at $html: run 'make book' first" >&2; exit 1; }
mkdir -p "$out"
if [ $# -gt 0 ]; then pages=("$@"); else
  pages=(); for f in "$html"/*.html "$html"/notebooks/*.html; do
    [ -e "$f" ] || continue
    name="${f#"$html"/}"; name="${name%.html}"
    case "$name" in index|genindex|search) continue ;; esac
    pages+=("$name")
  done
fi
for page in "${pages[@]}"; do
  png="$out/${page//\//_}.png"
  # --virtual-time-budget lets the deferred MathJax script typeset before the shot is taken
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=15000 \
    --window-size="$width,$height" --screenshot="$png" "file://$html/$page.html" >/dev/null 2>&1
  echo "$png"
done
