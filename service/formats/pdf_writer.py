"""PDF tables drawn on a reportlab canvas: title, generation time, the header row repeated
on every page, "Page n of N" footers, cells wrapped to fitted column widths, landscape when
the columns need it, and an embedded DejaVu Sans subset so that non-Latin text renders.

Cell text is drawn as plain strings, never parsed as markup, so values such as `<b>` or `&`
appear exactly as they are. The canvas keeps finished pages (compressed) until it saves, so
memory grows with the page count, not with the rows in flight: callers cap the row count.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Literal

from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from service.formats import Batches, Row, display

__all__ = ["PdfResult", "check_pdf", "write_pdf"]

FONTS_DIR = Path(__file__).resolve().parent.parent / "fonts"
FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
MARGIN = 36.0
PAD_X, PAD_Y = 3.0, 2.0
SAMPLE_ROWS = 200
MAX_NATURAL_WIDTH = 220.0  # a column's wish before fitting: longer text wraps
MAX_CELL_LINES = 24  # a row always fits on a page; longer cells end with "…"
FORM_TOTAL = "pageTotal"
_fonts_lock = threading.Lock()

Orientation = Literal["auto", "portrait", "landscape"]


@dataclass(frozen=True)
class PdfResult:
    rows: int
    pages: int
    landscape: bool


def _register_fonts() -> None:
    with _fonts_lock:
        if FONT not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(FONT, str(FONTS_DIR / "DejaVuSans.ttf")))
            pdfmetrics.registerFont(TTFont(BOLD, str(FONTS_DIR / "DejaVuSans-Bold.ttf")))


def _clean(text: str) -> str:
    """Tabs and other control characters would draw as missing glyphs; newlines stay."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else " " for c in text)


def _wrap(text: str, width: float, font: str, size: float, max_lines: int) -> list[str]:
    """Greedy word wrap; words wider than the column are broken between characters."""
    measure = pdfmetrics.stringWidth
    if "\n" not in text and measure(text, font, size) <= width:
        return [text]
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if measure(candidate, font, size) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word
            while measure(line, font, size) > width and len(line) > 1:
                cut = _fit(line, width, font, size)
                lines.append(line[:cut])
                line = line[cut:]
            if len(lines) > max_lines:
                break
        lines.append(line)
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(len(lines[-1]) - 1, 0)] + "…"
    return lines


def _fit(text: str, width: float, font: str, size: float) -> int:
    """How many leading characters of `text` fit in `width` (at least one)."""
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pdfmetrics.stringWidth(text[:mid], font, size) <= width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit_widths(natural: list[float], available: float) -> list[float]:
    """Narrow columns keep their width; wide ones share what is left (water filling)."""
    total = sum(natural)
    if total <= available:
        return [w * available / total for w in natural]
    widths = [0.0] * len(natural)
    remaining = available
    order = sorted(range(len(natural)), key=natural.__getitem__)
    for k, i in enumerate(order):
        widths[i] = min(natural[i], remaining / (len(natural) - k))
        remaining -= widths[i]
    return widths


class _Table:
    """Draws rows page by page; each new page gets the title block and the header row."""

    def __init__(
        self,
        canvas: Canvas,
        pagesize: tuple[float, float],
        header: Sequence[str],
        widths: list[float],
        size: float,
    ) -> None:
        self.canvas, self.header, self.widths, self.size = canvas, header, widths, size
        self.title, self.subtitle = "", ""
        self.leading = size * 1.25
        self.page_width, self.page_height = pagesize
        self.pages = 0
        self.y = 0.0
        self.text = canvas.beginText()
        self.striped = False

    def _row_height(self, lines: int) -> float:
        return lines * self.leading + 2 * PAD_Y

    def start_page(self) -> None:
        c, size = self.canvas, self.size
        self.pages += 1
        self.text = c.beginText()
        top = self.page_height - MARGIN
        self.text.setFont(BOLD, 12)
        self.text.setTextOrigin(MARGIN, top - 12)
        self.text.textOut(_clean(self.title))
        self.text.setFont(FONT, 7)
        self.text.setTextOrigin(MARGIN, top - 24)
        self.text.textOut(_clean(self.subtitle))
        self.y = top - 32
        cells = [
            _wrap(_clean(h), w - 2 * PAD_X, BOLD, size, 4)
            for h, w in zip(self.header, self.widths, strict=True)
        ]
        height = self._row_height(max(len(lines) for lines in cells))
        c.setFillGray(0.85)
        c.rect(MARGIN, self.y - height, sum(self.widths), height, stroke=0, fill=1)
        c.setFillGray(0)
        self._cells(cells, BOLD, ())
        self.y -= height
        self.striped = False

    def end_page(self) -> None:
        c = self.canvas
        c.drawText(self.text)
        footer = f"Page {self.pages} of "
        c.setFont(FONT, 7)
        x = self.page_width / 2 - pdfmetrics.stringWidth(footer + "000", FONT, 7) / 2
        c.drawString(x, MARGIN / 2, footer)
        c.saveState()
        c.translate(x + pdfmetrics.stringWidth(footer, FONT, 7), MARGIN / 2)
        c.doForm(FORM_TOTAL)  # the page count, known only once every page is drawn
        c.restoreState()
        c.showPage()

    def _cells(self, cells: list[list[str]], font: str, right: Sequence[bool]) -> None:
        t, x = self.text, MARGIN
        t.setFont(font, self.size)
        for i, (lines, width) in enumerate(zip(cells, self.widths, strict=True)):
            y = self.y - PAD_Y - self.size
            for line in lines:
                dx = (
                    width - PAD_X - pdfmetrics.stringWidth(line, font, self.size)
                    if right and right[i]
                    else PAD_X
                )
                t.setTextOrigin(x + dx, y)
                t.textOut(line)
                y -= self.leading
            x += width

    def row(self, row: Row) -> None:
        cells = [
            _wrap(_clean(display(v)), w - 2 * PAD_X, FONT, self.size, MAX_CELL_LINES)
            for v, w in zip(row, self.widths, strict=True)
        ]
        height = self._row_height(max((len(lines) for lines in cells), default=1))
        if self.y - height < MARGIN:
            self.end_page()
            self.start_page()
        if self.striped:
            self.canvas.setFillGray(0.95)
            self.canvas.rect(MARGIN, self.y - height, sum(self.widths), height, stroke=0, fill=1)
            self.canvas.setFillGray(0)
        self.striped = not self.striped
        self._cells(cells, FONT, [type(v) is int or type(v) is float for v in row])
        self.y -= height


def write_pdf(
    path: Path,
    header: Sequence[str],
    batches: Batches,
    *,
    title: str,
    subtitle: str,
    orientation: Orientation = "auto",
) -> PdfResult:
    """Write the rows as a paginated table; `subtitle` carries e.g. the generation time."""
    _register_fonts()
    rows = chain.from_iterable(batches)
    sample = list(islice(rows, SAMPLE_ROWS))
    size = 8.0 if len(header) <= 10 else 7.0 if len(header) <= 16 else 6.0
    natural = [_natural(i, h, sample, size) for i, h in enumerate(header)]
    portrait_width = A4[0] - 2 * MARGIN
    wide = orientation == "landscape" or (orientation == "auto" and sum(natural) > portrait_width)
    pagesize = landscape(A4) if wide else A4
    # The initial font too: otherwise every page names Helvetica, a font the PDF doesn't embed.
    canvas = Canvas(
        str(path), pagesize=pagesize, pageCompression=1, initialFontName=FONT, initialFontSize=size
    )
    canvas.setTitle(title)
    canvas.setCreator("export service")
    table = _Table(canvas, pagesize, header, _fit_widths(natural, pagesize[0] - 2 * MARGIN), size)
    table.title, table.subtitle = title, subtitle
    table.start_page()
    written = 0
    for row in chain(sample, rows):
        table.row(row)
        written += 1
    table.end_page()
    canvas.beginForm(FORM_TOTAL)
    canvas.setFont(FONT, 7)
    canvas.drawString(0, 0, str(table.pages))
    canvas.endForm()
    canvas.save()
    return PdfResult(written, table.pages, wide)


def _natural(col: int, label: str, sample: Sequence[Row], size: float) -> float:
    """A column's preferred width: its longest sampled line, its header's longest word."""
    words = [pdfmetrics.stringWidth(w, BOLD, size) for w in label.split()] or [0.0]
    cells = [
        pdfmetrics.stringWidth(line, FONT, size)
        for row in sample
        for line in _clean(display(row[col])).split("\n")
    ]
    return float(min(max(max(words), max(cells, default=0.0)), MAX_NATURAL_WIDTH)) + 2 * PAD_X


def check_pdf(path: Path) -> None:
    """A cheap structural read-back: the header and the end-of-file marker are there."""
    with path.open("rb") as fh:
        head = fh.read(8)
        fh.seek(max(path.stat().st_size - 1024, 0))
        tail = fh.read()
    if not head.startswith(b"%PDF-") or b"%%EOF" not in tail:
        raise ValueError(f"{path.name} is not a complete PDF")
