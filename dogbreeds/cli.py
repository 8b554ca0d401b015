"""Shared command-line helpers: options that accept both spellings, and the exit codes of every CLI.

Every `python -m dogbreeds.*` command exits with 0 on success. It exits with 1 on a failure while running, such
as unusable data, a corrupt file, a diverged loss or a failed download. It exits with 2 on an invalid command
line: a bad option value, or a missing folder or file named on it.
"""

from __future__ import annotations

import argparse
from typing import Any

EXIT_FAILURE = 1
EXIT_USAGE = 2

EXIT_CODES_EPILOG = ("Exit codes: 0 success, 1 failure while running, 2 invalid command line (bad option value "
                     "or missing path).")
SPELLING_EPILOG = "Options with several words accept both spellings, for example --batch-size and --batch_size."


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, *,
               default: Any = argparse.SUPPRESS, **kwargs: Any) -> None:
    """Add --name with both the underscore and the kebab-case spelling.

    Without `default`, an option that is not given stays out of the namespace, so callers can tell it apart
    from an explicit value.
    """
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*flags, dest=kwargs.pop("dest", name), default=default, **kwargs)
