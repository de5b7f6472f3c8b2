"""Reading the toolkit's HTML pages: the pattern viewers' embedded data (`embedded`), and the page as
headless Chromium renders it, measured by a script injected into a copy of it (`render`).

`render(page, width)` loads the page at that window width with every host name unresolvable and a
proxy that points nowhere (a request for anything not inlined fails), waits for its scripts, and
returns what the probe saw: the document's scroll width against the window's, each plotly figure's
box and whether it drew (`.main-svg`), each pattern viewer's canvas box and how many of its pixels
are strongly blue (heatmap cells of weight above ~0.2, not text or lines), the order of the page's top-level sections, and every resource the page requested.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PROBE = r"""
<script>
window.addEventListener('load', function () { setTimeout(function () {
  function box(e) { var b = e.getBoundingClientRect(); return {left: b.left, right: b.right, width: b.width, height: b.height}; }
  var actions = null;
  try { actions = (function () { %ACTIONS% })(); } catch (e) { actions = 'error: ' + e; }
  var r = {
    actions: actions,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    resources: performance.getEntriesByType('resource').map(function (e) { return e.name; }),
    figures: Array.prototype.map.call(document.querySelectorAll('.plotly-graph-div'), function (d) {
      var b = box(d); b.id = d.id; b.drawn = !!d.querySelector('.main-svg'); return b; }),
    views: Array.prototype.map.call(document.querySelectorAll('.ip-view'), function (v) {
      var c = v.querySelector('canvas'), b = box(c), px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, ink = 0;
      for (var i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && px[i + 2] - px[i] > 60) ink++;
      b.id = v.id; b.drawn = v.getAttribute('data-drawn'); b.ink = ink; return b; }),
    sections: Array.prototype.map.call(document.querySelectorAll('body > section, body > h1, body > details'),
      function (e) { return e.id || e.tagName.toLowerCase(); }),
    wide: Array.prototype.filter.call(document.querySelectorAll('body *'), function (e) {
      return e.getBoundingClientRect().right > window.innerWidth + 0.5 && !e.closest('details:not([open])'); })
      .slice(0, 5).map(function (e) { return e.tagName + '#' + e.id + '.' + e.className; })
  };
  var pre = document.createElement('pre'); pre.id = '__probe'; pre.textContent = JSON.stringify(r); document.body.appendChild(pre);
}, 300); });
</script>
"""


def embedded(html: str) -> dict:
    """The JSON the viewer carries, parsed back out of its HTML."""
    match = re.search(r"<script type='application/json' class='ip-data'>(.*?)</script>", html, re.S)
    assert match, "no viewer data in the page"
    return json.loads(match.group(1).replace("<\\/", "</"))


def embedded_all(html: str) -> dict[str, dict]:
    """Every viewer's JSON in a page, by the viewer's element id."""
    found = re.findall(r"<div class='ip-view' id='([^']+)'>.*?<script type='application/json' class='ip-data'>(.*?)</script>",
                       html, re.S)
    return {view_id: json.loads(data.replace("<\\/", "</")) for view_id, data in found}


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def render(page: Path, width: int, height: int = 1200, timeout: float = 120, actions: str = "") -> dict:
    """Load a copy of `page` (with the probe) at `width` x `height` pixels; return the probe's findings.

    `actions`: the body of a JavaScript function run first (events to dispatch, say); what it returns
    is the findings' ``actions``.
    """
    binary = chromium()
    assert binary, "no chromium binary"
    text = page.read_text()
    probe = PROBE.replace("%ACTIONS%", actions)
    probed = text.replace("</body>", probe + "</body>") if "</body>" in text else text + probe
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(probed)
        cmd = [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
               f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}", "--virtual-time-budget=15000",
               "--dump-dom", copy.as_uri()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    match = re.search(r'<pre id="__probe">(.*?)</pre>', out.stdout, re.S)
    assert match, f"the probe did not report (chromium exit {out.returncode}): {out.stderr[-500:]}"
    return json.loads(match.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))
