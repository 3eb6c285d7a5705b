"""Resource budgets of one parse, whatever the parser: plain Python.

`parse_file_within(path, filename, budget=...)` runs `parse_file` in a child
process whose address space is capped (RLIMIT_AS, MIRAGE_PARSE_MEMORY_MB)
and whose CPU time is capped (RLIMIT_CPU, MIRAGE_PARSE_TIME_LIMIT_SECONDS);
the sections come back one JSON line at a time, so the parent holds no more
of the file than before. A file that would need more memory kills only the
child: the worker stays alive, records the reason and takes the next
document. Pages (or chapters, slides: any section structure key in
PAGE_KEYS, and a parser's `page_count`) are counted against
MIRAGE_MAX_PAGES, the characters of text the sections carry against
MIRAGE_MAX_EXTRACTED_CHARACTERS.

Every budget a file exceeds raises BudgetExceeded, a ParseError whose
message names the limit and its value and whose `budget` names which one
(the job's `error_type` is `budget_<budget>`). The readers raise it too for
decompression bombs and hostile markup (see epub.py, html.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import ocr
from .base import ParsedDocument, ParseError, Section

# Structure keys that count a file's pages, whatever the format calls them.
PAGE_KEYS = ("page", "chapter_index", "slide")
# The child's exit status when Python itself ran out of memory.
EXIT_OUT_OF_MEMORY = 3


class BudgetExceeded(ParseError):
    """The file needs more than a budget allows; the message names the limit
    and its value, `budget` which one (memory, time, pages, characters,
    chunks, decompression, nesting, xml_entities)."""

    def __init__(self, message: str, *, budget: str) -> None:
        super().__init__(message)
        self.budget = budget

    @property
    def error_type(self) -> str:
        return f"budget_{self.budget}"


@dataclass(frozen=True)
class ParseBudget:
    memory_mb: int = 0  # 0: no limit (and no child process)
    time_limit_seconds: int = 0
    max_pages: int = 0
    max_characters: int = 0  # of extracted text, all sections together; 0: no limit

    def memory_message(self) -> str:
        return f"needs more than {self.memory_mb} MB to parse (MIRAGE_PARSE_MEMORY_MB)"

    def pages_message(self, pages: int) -> str:
        return f"has more than {self.max_pages} pages ({pages}; MIRAGE_MAX_PAGES is {self.max_pages})"


def check_pages(budget: ParseBudget, pages: int) -> None:
    if budget.max_pages and pages > budget.max_pages:
        raise BudgetExceeded(budget.pages_message(pages), budget="pages")


def _counted(sections: Iterator[Section], budget: ParseBudget) -> Iterator[Section]:
    """The sections, each checked against the page and character budgets
    before it is handed on (so a file over a budget stops being read there)."""
    characters = 0
    for section in sections:
        for key in PAGE_KEYS:
            value = section.structure.get(key)
            if isinstance(value, int):
                check_pages(budget, value)
        characters += len(section.text)
        if budget.max_characters and characters > budget.max_characters:
            raise BudgetExceeded(
                f"extracts more than {budget.max_characters} characters of text "
                f"(MIRAGE_MAX_EXTRACTED_CHARACTERS is {budget.max_characters})",
                budget="characters",
            )
        yield section


def parse_file_within(path: Path, filename: str, *, budget: ParseBudget) -> ParsedDocument:
    """`parse_file` under the budget. Raises ParseError (BudgetExceeded for a
    budget) at once or while the sections are read, like `parse_file`."""
    if not budget.memory_mb:
        from . import parse_file

        parsed = parse_file(path, filename)
        check_pages(budget, int(parsed.metadata.get("page_count") or 0))
        parsed.sections = _counted(parsed.sections, budget)
        return parsed
    child = _ChildParse(path=Path(path), filename=filename, budget=budget)
    try:
        header = child.header()
        metadata = header.get("metadata") or {}
        check_pages(budget, int(metadata.get("page_count") or 0))
    except BaseException:
        # A budget, a parse error, or the task's time limit striking while
        # the child opens the file: the child goes with it.
        child.stop()
        raise
    parsed = ParsedDocument(
        file_type=header["file_type"], title=header.get("title"), sections=iter(()), metadata=metadata
    )
    parsed.sections = _counted(child.sections(parsed.metadata), budget)
    return parsed


class _ChildParse:
    """One child process running documents.parsers.child on a file."""

    def __init__(self, *, path: Path, filename: str, budget: ParseBudget) -> None:
        self.budget = budget
        # A file, not a pipe: a parser that logs a lot must not block on it.
        # Closed by `stop`, hence no `with`.
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "documents.parsers.child",
                str(path),
                filename,
                str(budget.memory_mb),
                str(budget.time_limit_seconds),
                # The parent's OCR languages: the child has no Django settings.
                ocr.LANGUAGES,
            ],
            stdout=subprocess.PIPE,
            stderr=self.errors,
            stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]),
            start_new_session=True,
        )

    def header(self) -> dict:
        message = self._next()
        if "header" not in message:
            self._raise(message)
        return message["header"]

    def sections(self, metadata: dict) -> Iterator[Section]:
        try:
            while True:
                message = self._next()
                if "section" in message:
                    section = message["section"]
                    yield Section(
                        text=section["text"],
                        structure=section["structure"],
                        atomic=section["atomic"],
                        table_header=section.get("table_header"),
                    )
                elif "end" in message:
                    metadata.update(message["end"])
                    return
                else:
                    self._raise(message)
        finally:
            self.stop()

    def _next(self) -> dict:
        line = self.process.stdout.readline()
        if line:
            return json.loads(line)
        return {"died": self._wait()}

    def _raise(self, message: dict):
        self.stop()
        if "error" in message:
            if message.get("budget"):
                raise BudgetExceeded(message["error"], budget=message["budget"])
            raise ParseError(message["error"])
        code = message.get("died")
        if code in (EXIT_OUT_OF_MEMORY, -signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS):
            raise BudgetExceeded(self.budget.memory_message(), budget="memory")
        if code == -signal.SIGXCPU:
            raise BudgetExceeded(
                f"needs more than {self.budget.time_limit_seconds} s of CPU to parse (MIRAGE_PARSE_TIME_LIMIT_SECONDS)",
                budget="time",
            )
        self.errors.seek(0)
        detail = self.errors.read().decode(errors="replace").strip().splitlines()
        raise ParseError(f"the parser crashed (exit status {code}){': ' + detail[-1] if detail else ''}")

    def _wait(self) -> int:
        return self.process.wait()

    def stop(self) -> None:
        """Kill the child if it still runs (a cancelled or timed-out parse) and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process.stdout.close()
        self.errors.close()
