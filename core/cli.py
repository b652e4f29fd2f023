"""The ``swimdiff`` command line: thin argument parsing over core functions.

Each command parses its arguments into config dataclasses, calls one core function and reports
through a :class:`~core.events.Reporter`. Exit codes: 0 success, 2 a user error (message says
the fix), 1 a bug (traceback logged), 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .commands import adapt, change, classify, detect, device, pretrain, stack, threshold
from .commands.common import Formatter
from .events import BarReporter, JsonLinesReporter, JsonLogHandler, Reporter

logger = logging.getLogger("core.cli")

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_CANCELLED = 130
# Errors of the place a file goes, not of the program: a full disk or quota, a read-only file system, no
# permission. Any other OSError escaping a command stays a bug (its traceback is logged).
USER_OS_ERRORS = {
    errno.ENOSPC: "the disk is full: free some space or choose another output location",
    errno.EROFS: "the file system is read-only: choose another output location",
    errno.EACCES: "permission denied: check the file's permissions or choose another location",
    errno.EPERM: "operation not permitted: check the file's permissions or choose another location",
}
if hasattr(errno, "EDQUOT"):  # not on every platform
    USER_OS_ERRORS[errno.EDQUOT] = "the disk quota is exhausted: free some space or choose another output location"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swimdiff", formatter_class=Formatter,
        description="SwiMDiff: self-supervised pre-training and change detection for multi-date satellite rasters.",
    )
    parser.add_argument("--version", action="version", version=f"swimdiff {__version__}")
    parser.add_argument("--events", choices=("none", "jsonl"), default="none",
                        help="jsonl: one JSON event per stdout line (for the QGIS plugin)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    pretrain.add(commands)
    detect.add(commands)
    change.add_finetune(commands)
    change.add_evaluate(commands)
    adapt.add(commands)
    classify.add_finetune(commands)
    classify.add_classify(commands)
    device.add(commands)
    stack.add(commands)
    threshold.add(commands)
    return parser


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept ``--events jsonl`` and ``-v`` after the command too (``swimdiff pretrain ... --events jsonl``)."""
    out, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--events" and i + 1 < len(argv):
            out += argv[i:i + 2]
            i += 2
            continue
        if argv[i].startswith("--events="):
            out.append(argv[i])
        elif argv[i] in ("-v", "--verbose"):
            out.append(argv[i])
        else:
            rest.append(argv[i])
        i += 1
    return out + rest


def user_os_error(error: BaseException) -> str | None:
    """The one-line message for an OSError of the environment (see ``USER_OS_ERRORS``) that is ``error`` or
    caused it, else None (a bug)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in USER_OS_ERRORS:
            name = current.filename or getattr(current, "filename2", None)
            verb = "access" if current.errno in (errno.EACCES, errno.EPERM) else "write"
            where = f"'{os.fsdecode(name)}'" if name else "an output file"
            return f"cannot {verb} {where}: {USER_OS_ERRORS[current.errno]} ({os.strerror(current.errno)})"
        current = current.__cause__ or current.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``swimdiff`` console script."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # a second Ctrl-C while a stopped run was already ending: exit quietly
        return EXIT_CANCELLED


def _main(argv: Sequence[str] | None) -> int:
    # GDAL caches up to 5 % of RAM in blocks by default, so peak memory would grow with the raster
    # size; tile-by-tile work needs only a few blocks. Users can still set their own value.
    os.environ.setdefault("GDAL_CACHEMAX", "256")  # MB
    argv = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING
    reporter: Reporter
    if args.events == "jsonl":
        json_reporter = JsonLinesReporter()
        logging.basicConfig(level=level, handlers=[JsonLogHandler(json_reporter)])
        reporter = json_reporter if rank == 0 else Reporter()
    else:
        if rank == 0 and sys.stderr.isatty():
            bar = BarReporter()
            logging.basicConfig(level=level, handlers=[bar.log_handler()])
            reporter = bar
        else:
            logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
            reporter = Reporter()
    from .errors import Cancelled, SwimDiffError

    try:
        outputs = args.run(args, reporter)
        reporter.result(outputs)
        return 0
    except Cancelled as error:  # before SwimDiffError, its base class
        logger.warning("%s", error)
        reporter.error(error.kind, str(error))
        return EXIT_CANCELLED
    except SwimDiffError as error:
        logger.error("%s", error)
        reporter.error(error.kind, str(error))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        reporter.error("Interrupted", "interrupted")
        return EXIT_CANCELLED
    except Exception as error:  # a bug: keep the traceback, unless the disk or permissions are to blame
        message = user_os_error(error)
        if message is not None:
            logger.error("%s", message)
            reporter.error("OutputError", message)
            return EXIT_USER_ERROR
        logger.exception("unexpected error (a bug; please report it with this traceback)")
        reporter.error("InternalError", f"{type(error).__name__}: {error}")
        return EXIT_BUG
    finally:
        reporter.close()
        if "torch" in sys.modules:  # only commands that trained can have joined a process group
            from .pretrain.distributed import leave_process_group

            leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
