"""The PDF writer read back with pypdf: text, header on every page, page numbers, layout."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pypdf import PdfReader

from service.formats import Cell
from service.formats.pdf_writer import MAX_CELL_LINES, check_pdf, write_pdf

TOKYO = timezone(timedelta(hours=9))
HOSTILE = "<b>bold</b> & <font name=x>&amp;</font> <para><br/> ]]> %PDF-1.4 (paren) \\"
# Right-to-left scripts are drawn in logical order (no bidi reordering), so none here.
UNICODE = "Zoë Müller · Ελληνικά · русский · ½ € ✓ ğ ş ț ł"


def write(
    path: Path, header: list[str], rows: list[list[Cell]], **options: object
) -> tuple[list[str], PdfReader]:
    write_pdf(
        path, header, [rows], title=str(options.pop("title", "Title")), subtitle="Generated now", **options
    )  # type: ignore[arg-type]
    reader = PdfReader(path)
    return [page.extract_text() for page in reader.pages], reader


def flat(text: str) -> str:
    return " ".join(text.split())


def test_text_reads_back_including_unicode_and_markup(tmp_path: Path) -> None:
    rows: list[list[Cell]] = [
        [1, UNICODE, None, 2.5, True, datetime(2026, 3, 1, 21, 0, tzinfo=TOKYO), date(1999, 12, 31)],
        [2, HOSTILE, "", -7, False, None, None],
    ]
    pages, reader = write(
        tmp_path / "out.pdf",
        ["id", "text", "empty", "n", "flag", "when", "day"],
        rows,
        title="Records <of> & co",
    )
    text = pages[0]
    assert "Records <of> & co" in text and "Generated now" in text
    assert UNICODE in text
    assert flat(HOSTILE) in flat(text)  # wrapped over two lines, every character intact
    assert "2026-03-01 21:00:00+09:00" in text and "1999-12-31" in text
    assert "true" in text and "false" in text and "-7" in text
    assert reader.metadata is not None and reader.metadata.title == "Records <of> & co"


def test_font_is_embedded(tmp_path: Path) -> None:
    _, reader = write(tmp_path / "out.pdf", ["a"], [["x"]])
    fonts = reader.pages[0]["/Resources"]["/Font"]  # type: ignore[index]
    descriptors = [font.get_object()["/FontDescriptor"].get_object() for font in fonts.values()]  # type: ignore[attr-defined]
    assert descriptors and all("/FontFile2" in d for d in descriptors)
    assert all("DejaVuSans" in str(font.get_object()["/BaseFont"]) for font in fonts.values())  # type: ignore[attr-defined]


def test_header_and_page_numbers_on_every_page(tmp_path: Path) -> None:
    rows: list[list[Cell]] = [[i, f"person-{i:04d}"] for i in range(400)]
    pages, _ = write(tmp_path / "out.pdf", ["Number", "Person name"], rows)
    assert len(pages) > 3
    for n, page in enumerate(pages, start=1):
        assert "Number" in page and "Person name" in page and "Title" in page
        assert f"Page {n} of {len(pages)}" in flat(page)
    text = "\n".join(pages)
    assert all(f"person-{i:04d}" in text for i in range(400))


def test_long_text_wraps_and_an_overlong_cell_is_cut(tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(300))
    unbroken = "y" * 400
    pages, _ = write(tmp_path / "out.pdf", ["a"], [[words], [unbroken]], orientation="portrait")
    squeezed = "".join("".join(pages).split())
    assert "".join(words.split()) in squeezed  # every word, across many lines
    assert unbroken in squeezed  # a word wider than its column is broken, not lost

    huge = " ".join(f"z{i}" for i in range(5000))
    pages, _ = write(tmp_path / "cut.pdf", ["a"], [[huge]])
    text = pages[0]
    assert "z0 " in text and "…" in text and "z4999" not in text
    assert len(pages) == 1 and len(text.splitlines()) <= MAX_CELL_LINES + 6


def test_wide_tables_turn_landscape_narrow_ones_stay_portrait(tmp_path: Path) -> None:
    _, narrow = write(tmp_path / "narrow.pdf", ["a", "b"], [["x", "y"]])
    box = narrow.pages[0].mediabox
    assert box.width < box.height
    header = [f"column {i}" for i in range(12)]
    _, wide = write(tmp_path / "wide.pdf", header, [[f"value number {i}" for i in range(12)]])
    box = wide.pages[0].mediabox
    assert box.width > box.height
    _, forced = write(tmp_path / "forced.pdf", ["a"], [["x"]], orientation="landscape")
    assert forced.pages[0].mediabox.width > forced.pages[0].mediabox.height


def test_many_columns_still_render_every_value(tmp_path: Path) -> None:
    header = [f"c{i}" for i in range(40)]
    pages, _ = write(tmp_path / "out.pdf", header, [[f"v{i}" for i in range(40)]])
    squeezed = "".join("".join(pages).split())
    assert all(f"v{i}" in squeezed for i in range(40))


def test_control_characters_are_drawn_as_spaces(tmp_path: Path) -> None:
    pages, _ = write(tmp_path / "out.pdf", ["a"], [["tab\there\x00nul\x1besc"]])
    assert "tab here nul esc" in pages[0]


def test_empty_export_is_one_page_with_the_header(tmp_path: Path) -> None:
    pages, _ = write(tmp_path / "out.pdf", ["Only header"], [])
    assert len(pages) == 1 and "Only header" in pages[0] and "Page 1 of 1" in flat(pages[0])


def test_check_refuses_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "out.pdf"
    write(path, ["a"], [["x"]])
    check_pdf(path)
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(ValueError):
        check_pdf(path)
