"""Row 8: OCR and office files. Pages per second and peak memory of reading
a scanned PDF through OCR (pages rasterised from a real corpus PDF, no text
layer), against reading the same pages' text layer; and peak memory of
parsing and chunking a 100,000-row Excel sheet, against a 10,000-row one
(is the sheet streamed, or held whole?)."""

from __future__ import annotations

import io
import shutil

from bench import env
from bench.memory import probe
from bench.report import Result, say

SCAN_SOURCE = "pdf/pdflatex-4-pages.pdf"
SCAN_COPIES = 3
SHEET_ROWS = (10_000, 100_000)


def make_scan(path, *, copies: int) -> int:
    """An image-only PDF of the source's pages at 150 dpi, `copies` times
    over; returns its page count."""
    import pypdfium2

    document = pypdfium2.PdfDocument(str(env.CORPUS / SCAN_SOURCE))
    images = []
    try:
        for index in range(len(document)):
            page = document[index]
            images.append(page.render(scale=150 / 72, grayscale=True).to_pil())
            page.close()
    finally:
        document.close()
    pages = images * copies
    output = io.BytesIO()
    pages[0].save(output, format="PDF", resolution=150, save_all=True, append_images=pages[1:])
    path.write_bytes(output.getvalue())
    return len(pages)


def run(*, quick: bool) -> list[Result]:
    from tests.support.office_files import long_xlsx

    results = []
    if shutil.which("tesseract") is None:
        raise RuntimeError("tesseract is not installed (make ocr)")
    copies = 1 if quick else SCAN_COPIES
    scan = env.WORK_DIR / "bench-scan.pdf"
    pages = make_scan(scan, copies=copies)
    say(f"  OCR of an image-only PDF of {pages} pages (150 dpi scans of {SCAN_SOURCE}), own process")
    try:
        figures = probe("ocr", scan)
    finally:
        scan.unlink(missing_ok=True)
    text_layer = probe("ocr", env.CORPUS / SCAN_SOURCE)
    ocr_rate = figures["pages_ocr"] / figures["seconds"]
    text_rate = text_layer["pages"] / text_layer["seconds"]
    say(
        f"    {figures['pages_ocr']} pages OCR'd in {figures['seconds']:.1f} s ({ocr_rate:.2f} pages/s); "
        f"worker peak {figures['peak_mb']:.0f} MB (before {figures['baseline_mb']:.0f} MB), "
        f"Tesseract peak {figures['tesseract_peak_mb']:.0f} MB; text layer {text_rate:.1f} pages/s"
    )
    results.append(
        Result(
            row=f"8 OCR: {pages}-page scan, pages/s (vs the same pages' text layer)",
            measured=f"{ocr_rate:.2f} pages/s",
            baseline=f"{text_rate:.1f} pages/s",
            ratio=ocr_rate / text_rate,
            goal="stated",
            met=None,
            notes=[
                f"peak memory: worker {figures['peak_mb']:.0f} MB (resident before parse "
                f"{figures['baseline_mb']:.0f} MB), Tesseract process {figures['tesseract_peak_mb']:.0f} MB; "
                f"300 dpi rendering, OMP_THREAD_LIMIT=1, MIRAGE_OCR_LANGUAGES=eng"
            ],
        )
    )

    sizes = (1_000, 10_000) if quick else SHEET_ROWS
    peaks = {}
    for rows in sizes:
        path = env.WORK_DIR / f"bench-{rows}-rows.xlsx"
        long_xlsx(path, rows=rows)
        say(f"  parse + chunk of a {rows}-row Excel sheet (local tokenizer), own process")
        try:
            peaks[rows] = probe("parse", path)
        finally:
            path.unlink(missing_ok=True)
        say(
            f"    peak {peaks[rows]['peak_mb']:.0f} MB (after imports {peaks[rows]['baseline_mb']:.0f} MB), "
            f"{peaks[rows]['chunks']} chunks in {peaks[rows]['seconds']:.1f} s"
        )
    small, large = (peaks[rows] for rows in sizes)
    ratio = large["peak_mb"] / small["peak_mb"]
    results.append(
        Result(
            row=f"8 memory: parse + chunk of a {sizes[1]}-row sheet vs a {sizes[0]}-row one",
            measured=f"{large['peak_mb']:.0f} MB peak",
            baseline=f"{small['peak_mb']:.0f} MB peak",
            ratio=ratio,
            goal="bounded: <= 1.5x",
            met=ratio <= 1.5,
            notes=[
                f"{sizes[1]} rows: {large['chunks']} chunks in {large['seconds']:.0f} s "
                f"({sizes[1] / large['seconds']:.0f} rows/s)"
            ],
        )
    )
    return results
