"""Plain-text tables for management commands."""


def format_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
