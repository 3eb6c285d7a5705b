"""Office files and scans built for the tests from real inputs or with the
libraries that write these formats: small, made on the fly, nothing binary
in the repository."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx
import pypdfium2
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls
from pptx.util import Inches

from tests.support.corpus import CORPUS, FORMATS

# A phrase that exists only in the picture of a scanned page: no text layer
# anywhere holds it, so finding it proves OCR read the page.
SCAN_PHRASE = "Huardest gefburn"
SCAN = FORMATS / "scans" / "pdflatex-pages-1-2-scan.pdf"
# German lecture notes; page 6 is prose about topological spaces.
GERMAN_SOURCE = CORPUS / "pdf" / "GeoTopo-komprimiert.pdf"


def image_only_pdf(source: Path, *, page_index: int, dpi: int = 150) -> bytes:
    """A scan of one page of `source`: the page rasterised, saved as a PDF
    that holds only the picture (no text layer)."""
    document = pypdfium2.PdfDocument(str(source))
    try:
        page = document[page_index]
        image = page.render(scale=dpi / 72, grayscale=True).to_pil()
        page.close()
    finally:
        document.close()
    output = io.BytesIO()
    image.save(output, format="PDF", resolution=dpi)
    return output.getvalue()


def rich_docx() -> bytes:
    """Headings, a list, a table, a header and footer, a comment and tracked
    changes: everything the Word parser must keep or leave out."""
    document = docx.Document()
    document.core_properties.title = "Field Manual"
    document.sections[0].header.paragraphs[0].text = "HEADER-ONLY running head"
    document.sections[0].footer.paragraphs[0].text = "FOOTER-ONLY page footer"
    document.add_heading("Rivers", level=1)
    intro = document.add_paragraph("Rivers carry water to the sea.")
    document.add_comment(intro.runs, text="COMMENT-ONLY remark", author="Reviewer")
    document.add_heading("Deltas", level=2)
    document.add_paragraph("Silt settles where the river slows.", style="List Bullet")
    document.add_paragraph("Channels split and rejoin.", style="List Bullet")
    changed = document.add_paragraph("The delta grows ")
    changed._p.append(
        parse_xml(
            f'<w:ins {nsdecls("w")} w:id="1" w:author="A" w:date="2024-01-01T00:00:00Z">'
            "<w:r><w:t>INSERTED-UNACCEPTED </w:t></w:r></w:ins>"
        )
    )
    changed._p.append(
        parse_xml(
            f'<w:del {nsdecls("w")} w:id="2" w:author="A" w:date="2024-01-01T00:00:00Z">'
            "<w:r><w:delText>every year</w:delText></w:r></w:del>"
        )
    )
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("River", "Length km"), ("Nile", "6650"), ("Rhine", "1230")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.add_heading("Lakes", level=1)
    document.add_paragraph("Lakes hold still water.")
    output = io.BytesIO()
    document.save(output)
    return output.getvalue()


def rich_pptx() -> bytes:
    presentation = pptx.Presentation()
    presentation.core_properties.title = "Quarterly Review"
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Revenue grew"
    slide.placeholders[1].text = "Sales rose in every region."
    slide.notes_slide.notes_text_frame.text = "Mention the NOTES-ONLY caveat."
    second = presentation.slides.add_slide(presentation.slide_layouts[5])
    second.shapes.title.text = "Regions"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for row_index, cells in enumerate([("Region", "Sales"), ("North", "120"), ("South", "95")]):
        for column_index, text in enumerate(cells):
            table.cell(row_index, column_index).text = text
    output = io.BytesIO()
    presentation.save(output)
    return output.getvalue()


def pictures_only_pptx() -> bytes:
    """Slides with nothing to read: a blank slide and an empty shape."""
    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[6])
    slide.shapes.add_textbox(Inches(1), Inches(1), Inches(2), Inches(1))
    presentation.slides.add_slide(presentation.slide_layouts[6])
    output = io.BytesIO()
    presentation.save(output)
    return output.getvalue()


def sparse_xlsx() -> bytes:
    """Two sheets; the first with an empty leading row, an empty column, an
    empty row in the middle, and a formula with a cached value."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Rivers"
    sheet.append([])
    sheet.append(["River", None, "Length km", "Country"])
    sheet.append(["Nile", None, 6650, "Egypt"])
    sheet.append([])
    sheet.append(["Rhine", None, 1230.5, "Germany"])
    sheet.append(["Total", None, "=SUM(C3:C5)", None])
    other = workbook.create_sheet("Lakes")
    other.append(["Lake", "Area"])
    other.append(["Baikal", 31722])
    output = io.BytesIO()
    workbook.save(output)
    return _with_cached_formula_value(output.getvalue(), "SUM(C3:C5)", "7880.5")


def _with_cached_formula_value(data: bytes, formula: str, value: str) -> bytes:
    """openpyxl writes formulas without the value a spreadsheet program
    caches next to them; put one in, as Excel would."""
    source = zipfile.ZipFile(io.BytesIO(data))
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            content = source.read(entry.filename)
            if entry.filename == "xl/worksheets/sheet1.xml":
                content = content.replace(
                    f"<f>{formula}</f><v></v>".encode(), f"<f>{formula}</f><v>{value}</v>".encode()
                )
                content = content.replace(f"<f>{formula}</f><v/>".encode(), f"<f>{formula}</f><v>{value}</v>".encode())
                assert f"<v>{value}</v>".encode() in content, "formula cell not found"
            target.writestr(entry, content)
    return output.getvalue()


def long_xlsx(path: Path, *, rows: int) -> None:
    """A workbook of one sheet with `rows` rows under a header, written as
    raw XML (inline strings) so that building it stays fast."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _XLSX_CONTENT_TYPES)
        archive.writestr("_rels/.rels", _XLSX_RELS)
        archive.writestr("xl/workbook.xml", _XLSX_WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", _XLSX_WORKBOOK_RELS)
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            sheet.write(
                b'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="' + _SPREADSHEET_NS + b'"><sheetData>'
            )
            sheet.write(_row(1, ["id", "station", "reading", "remark"]))
            for index in range(2, rows + 2):
                sheet.write(_row(index, [index - 1, f"station-{index % 97}", index * 0.5, f"remark number {index}"]))
            sheet.write(b"</sheetData></worksheet>")


def _row(number: int, values: list) -> bytes:
    cells = []
    for column, value in zip("ABCD", values, strict=False):
        if isinstance(value, str):
            cells.append(f'<c r="{column}{number}" t="inlineStr"><is><t>{value}</t></is></c>')
        else:
            cells.append(f'<c r="{column}{number}"><v>{value}</v></c>')
    return f'<row r="{number}">{"".join(cells)}</row>'.encode()


_SPREADSHEET_NS = b"http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_XLSX_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_XLSX_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
_XLSX_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Readings" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_XLSX_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/></Relationships>'
)


def zip_bomb_xlsx(*, inflated_mb: int = 64) -> bytes:
    """A real workbook whose sheet inflates from a few tens of KB to
    `inflated_mb` MB of padding: the ratio gives it away."""
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _XLSX_CONTENT_TYPES)
        archive.writestr("_rels/.rels", _XLSX_RELS)
        archive.writestr("xl/workbook.xml", _XLSX_WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", _XLSX_WORKBOOK_RELS)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(
                b'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="' + _SPREADSHEET_NS + b'"><sheetData>'
            )
            block = b" " * (1024 * 1024)
            for _ in range(inflated_mb):
                sheet.write(block)
            sheet.write(b"</sheetData></worksheet>")
    return output.getvalue()


def plain_zip() -> bytes:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes/readme.txt", "just some files in a zip\n")
        archive.writestr("notes/data.csv", "a,b\n1,2\n")
    return output.getvalue()


def encrypted_docx(password: str = "secret") -> bytes:
    """A Word document saved with a password: an OLE container holding the
    encrypted package, as Word and LibreOffice write it."""
    from msoffcrypto.format.ooxml import OOXMLFile

    output = io.BytesIO()
    OOXMLFile(io.BytesIO(rich_docx())).encrypt(password, output)
    return output.getvalue()


def corrupt_docx() -> bytes:
    """A real Word document cut short: the head says DOCX, the central
    directory is gone."""
    data = (FORMATS / "office" / "htmlcssguide.docx").read_bytes()
    return data[: len(data) // 2]


def epub_named_docx() -> bytes:
    return (CORPUS / "epub" / "alice-epub2.epub").read_bytes()
