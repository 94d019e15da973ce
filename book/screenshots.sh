#!/usr/bin/env bash
# Render pages of the built book in headless Chromium at 1,400 px, one PNG per page, and check them:
# console errors (printed per page) and sideways scrolling (a block wider than its box, or the page
# wider than the window), so the first screen, the tables and the figures can be judged by eye.
#
#   make book && book/screenshots.sh                 # every page (notebook pages included)
#   book/screenshots.sh intro notebooks/table2_portfolio notebooks/table4_rankic
#   OUT=shots WIDTH=1400 HEIGHT=2400 book/screenshots.sh intro
#
# Needs a Chromium (Debian: apt-get install -y chromium). Pages are opened as file:// URLs, so this
# also checks that the site works without a web server and without a network. Exit status 1 when a
# page logs a console error or scrolls sideways.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
html="$here/_build/html"
out="${OUT:-$here/_build/screenshots}"
width="${WIDTH:-1400}"
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
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=15000
       --window-size="$width,$height" --allow-file-access-from-files)
status=0
for page in "${pages[@]}"; do
  png="$out/${page//\//_}.png"
  # --virtual-time-budget lets the deferred MathJax script typeset before the shot is taken
  "$browser" "${flags[@]}" --screenshot="$png" "file://$html/$page.html" >/dev/null 2>&1
  echo "$png"
  # console errors: Chromium logs them to stderr with --enable-logging
  errors="$("$browser" "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$html/$page.html" 2>&1 >/dev/null \
            | grep -E 'CONSOLE.*(Uncaught|Error|error)' || true)"
  if [ -n "$errors" ]; then echo "  console errors:"; echo "$errors" | sed 's/^/    /'; status=1; fi
  # sideways scrolling: a harness page loads the page in a $width px iframe and lists the wide blocks
  harness="$out/.check-${page//\//_}.html"
  cat > "$harness" <<HTML
<html><body><iframe id="f" src="file://$html/$page.html" style="width:${width}px;height:${height}px;border:0"></iframe>
<pre id="r">pending</pre><script>
document.getElementById("f").onload = function () {
  var d = this.contentDocument, w = [];
  if (d.documentElement.scrollWidth > d.documentElement.clientWidth + 1) w.push("page " + d.documentElement.scrollWidth + "px");
  d.querySelectorAll("main *").forEach(function (e) {
    var s = getComputedStyle(e);
    if (/(auto|scroll)/.test(s.overflowX) && e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0)
      w.push((e.className || e.tagName).toString().slice(0, 40) + ": " + e.scrollWidth + " > " + e.clientWidth + " px");
  });
  document.getElementById("r").textContent = "WI" + "DE[" + w.join(" | ") + "]";
};
</script></body></html>
HTML
  wide="$("$browser" "${flags[@]}" --dump-dom "file://$harness" 2>/dev/null | grep -o 'WIDE\[[^]]*\]' || echo 'WIDE[?]')"
  rm -f "$harness"
  wide="$(echo "$wide" | grep -v 'w.join' | head -1 | sed 's/&gt;/>/g')"
  if [ "$wide" != "WIDE[]" ]; then echo "  scrolls sideways at ${width} px: ${wide#WIDE}"; status=1; fi
done
exit $status
