"""A report as a person sees it: rendered by headless Chromium (Debian's `chromium`, installed by
scripts/setup_env.sh --test), as a screenshot and the DOM after layout.

    shot = render(html_path, tmp_path)
    shot.plots        # [Plot(title, xlabel, ylabel, alt, caption, box, natural)] in page order
    shot.crop(plot)   # the plot's pixels in the screenshot (a PIL image)

A copy of the page gets a small script that writes each plot image's box on the page and its decoded
size into the DOM, so the dumped DOM says where each picture is in the screenshot.
"""

from __future__ import annotations

import dataclasses
import html.parser
import pathlib
import shutil
import subprocess

WIDTH = 1200

_MEASURE = """<script>
window.addEventListener("load", () => {
  document.body.setAttribute("data-height", document.documentElement.scrollHeight);
  for (const img of document.querySelectorAll("figure.plot img")) {
    const r = img.getBoundingClientRect();
    img.setAttribute("data-box", [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round).join(","));
    img.setAttribute("data-natural", img.naturalWidth + "x" + img.naturalHeight);
  }
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclasses.dataclass
class Plot:
    title: str
    xlabel: str
    ylabel: str
    alt: str = ""
    caption: str = ""
    box: tuple[int, int, int, int] = (0, 0, 0, 0)   # left, top, width, height (CSS pixels)
    natural: tuple[int, int] = (0, 0)              # the PNG's decoded size


class _Figures(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.plots: list[Plot] = []
        self.height = 0
        self.headings: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-height"):
            self.height = int(a["data-height"])
        elif tag == "figure" and "plot" in (a.get("class") or "").split():
            self.plots.append(Plot(a.get("data-title", ""), a.get("data-xlabel", ""), a.get("data-ylabel", "")))
        elif tag == "img" and self.plots and self._in != "done":
            p = self.plots[-1]
            p.alt = a.get("alt", "")
            if a.get("data-box"):
                p.box = tuple(int(x) for x in a["data-box"].split(","))
            if a.get("data-natural"):
                p.natural = tuple(int(x) for x in a["data-natural"].split("x"))
        elif tag == "figcaption":
            self._in = "caption"
        elif tag in ("h1", "h2", "h3"):
            self._in = "heading"
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("figcaption", "h1", "h2", "h3"):
            self._in = None

    def handle_data(self, data):
        if self._in == "caption" and self.plots:
            self.plots[-1].caption += data
        elif self._in == "heading":
            self.headings[-1] += data


@dataclasses.dataclass
class Shot:
    png: pathlib.Path
    plots: list[Plot]
    headings: list[str]
    height: int

    def crop(self, plot: Plot):
        from PIL import Image

        left, top, width, height = plot.box
        return Image.open(self.png).convert("RGB").crop((left, top, left + width, top + height))


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-device-scale-factor=1", *args], capture_output=True, text=True, timeout=120)


def render(page: str | pathlib.Path, out_dir: pathlib.Path) -> Shot:
    source = pathlib.Path(page).read_text(encoding="utf-8")
    measured = out_dir / (pathlib.Path(page).stem + ".measured.html")
    measured.write_text(source.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    dom = _run([f"--window-size={WIDTH},900", "--dump-dom", measured.as_uri()])
    assert dom.returncode == 0 and "<body" in dom.stdout, dom.stderr[-2000:]
    parsed = _Figures()
    parsed.feed(dom.stdout)
    png = out_dir / (pathlib.Path(page).stem + ".png")
    shot = _run([f"--window-size={WIDTH},{max(parsed.height, 200)}", f"--screenshot={png}", measured.as_uri()])
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    return Shot(png, parsed.plots, parsed.headings, parsed.height)


def is_drawn(image) -> bool:
    """A plot, not a blank or one-colour box: many colours, and a good share of non-white pixels
    (axes, ticks, text and the data)."""
    colors = image.getcolors(maxcolors=1 << 16)
    pixels = image.width * image.height
    if pixels == 0:
        return False
    non_white = sum(n for n, c in (colors or []) if sum(c) < 3 * 245) if colors else pixels
    return (colors is None or len(colors) > 20) and non_white > 0.02 * pixels
