"""`python -m documents.parsers.child PATH FILENAME MEMORY_MB CPU_SECONDS`

The child side of budgets.parse_file_within: caps its own address space and
CPU time, parses the file, and writes JSON lines to stdout: one `header`,
one `section` per section, then `end` (the parser's final metadata) or
`error` (a ParseError's message, and `budget` when a budget was exceeded).
Running out of memory exits with EXIT_OUT_OF_MEMORY; the kernel's signals
(SIGKILL, SIGSEGV, SIGXCPU) say the rest. Imports no Django."""

from __future__ import annotations

import json
import resource
import sys


def _limit(memory_mb: int, cpu_seconds: int) -> None:
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


def _write(out, message: dict) -> None:
    out.write(json.dumps(message, ensure_ascii=False, default=str))
    out.write("\n")


def _out_of_memory(error: BaseException) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MemoryError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def main(argv: list[str]) -> int:
    path, filename, memory_mb, cpu_seconds = argv[0], argv[1], int(argv[2]), int(argv[3])
    # Imported before the cap: the interpreter's own modules are not the file's cost.
    from documents.parsers import ocr, parse_file

    if len(argv) > 4:
        ocr.configure(languages=argv[4])
    from documents.parsers.base import ParseError
    from documents.parsers.budgets import EXIT_OUT_OF_MEMORY

    _limit(memory_mb, cpu_seconds)
    out = sys.stdout
    try:
        parsed = parse_file(path, filename)
        _write(out, {"header": {"file_type": parsed.file_type, "title": parsed.title, "metadata": parsed.metadata}})
        for section in parsed.sections:
            _write(
                out,
                {
                    "section": {
                        "text": section.text,
                        "structure": section.structure,
                        "atomic": section.atomic,
                        "table_header": section.table_header,
                    }
                },
            )
        _write(out, {"end": parsed.metadata})
    except MemoryError:
        return EXIT_OUT_OF_MEMORY
    except ParseError as error:
        if _out_of_memory(error):
            # A parser that reports running out of memory as a damaged file.
            return EXIT_OUT_OF_MEMORY
        _write(out, {"error": str(error), "budget": getattr(error, "budget", None)})
    except RecursionError:
        _write(out, {"error": "the file is nested too deeply to read (nesting limit)", "budget": "nesting"})
    except BrokenPipeError:
        return 0  # the parent stopped reading (cancelled, or a budget it checks)
    except Exception as error:  # noqa: BLE001 - any parser crash is the file's error, in words
        _write(out, {"error": f"could not read the file: {error}", "budget": None})
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
