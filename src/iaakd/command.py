"""What the ``iaakd`` subcommands share: usage errors as one line, argument types that refuse bad values, and
the entry point that turns every error a user can cause into one ``error:`` line and a non-zero status.

Exit status 1: bad usage, a bad model or output path, a missing extra; ``score`` and ``explain`` exit with
2 when some files could not be read (their rows say why).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from iaakd.errors import UserError, first_line

EXIT_USAGE = 1
# The optional modules a subcommand imports, and the extra that installs each
EXTRAS = {"onnx": "scoring", "onnxscript": "scoring", "onnxruntime": "scoring", "pytorch_grad_cam": "scoring"}


class Parser(argparse.ArgumentParser):
    """Usage errors as one ``error:`` line and status 1 (argparse's own status 2 means "some files failed" here)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (argparse names the option when it is not)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def require_modules(*names: str) -> None:
    """Each optional module is installed, else one line naming the extra that installs it (checked before
    the work starts: torch's ONNX exporter would otherwise fail deep inside, on a module it imports itself)."""
    from importlib.util import find_spec

    for name in names:
        if find_spec(name) is None:
            extra = EXTRAS[name]
            raise UserError(
                f"this command needs {name}, in the '{extra}' extra: pip install 'iaakd[{extra}]'"
            )


def output_file(path: Path, flag: str) -> Path:
    """``path`` can be written as a file: not an existing folder."""
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; name a file to write")
    return path


def output_folder(path: Path, flag: str) -> Path:
    """``path`` can hold files: a folder, or nothing yet."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file; name a folder (it is created when missing)")
    return path


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> NoReturn:
    """Runs a subcommand and exits with its status; bad input ends in one ``error:`` line and status 1."""
    try:
        status = run(args)
    except UserError as error:
        fail(str(error))
    except ModuleNotFoundError as error:
        extra = EXTRAS.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        fail(f"this command needs {error.name}, in the '{extra}' extra: pip install 'iaakd[{extra}]'")
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of ours, and nothing more to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        sys.exit(EXIT_USAGE)
    except OSError as error:  # a file the command reads or writes: permissions, a full disk, ...
        if error.filename is None:
            raise  # not a file of the user's: the traceback is the report
        fail(f"{error.filename}: {error.strerror or first_line(error)}")
    sys.exit(status)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
