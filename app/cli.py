"""The ``octscreen`` command (argparse). Each subcommand lives in its own module exposing
``register(subparsers)``, which adds a parser whose default ``func(args) -> int`` runs it.

    octscreen synth   generate synthetic OCT exams (DICOM OPT or PNG)
    octscreen info    list the volumes a file or folder holds
    octscreen screen  screen exams headless: PDF reports, results.csv / results.json
    octscreen batch   screen an archive as tasks on a Dask cluster (each unit: one `screen`)
    octscreen pacs    talk to a PACS: echo, find, get (C-GET / C-MOVE), send
    octscreen listen  receive DICOM from a device or PACS (storage SCP), optionally screening it
    octscreen gui     start the desktop app
    octscreen train   teacher | student | distill | crossval | export (training/)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core import __version__

# (module, human name) in the order shown by --help. A module that fails to import (e.g. the GUI
# without a Qt platform) only disables its own subcommand.
SUBCOMMANDS = [
    "app.cmd_synth",
    "app.cmd_info",
    "app.cmd_screen",
    "app.cmd_batch",
    "app.cmd_pacs",
    "app.cmd_listen",
    "app.cmd_audit",
    "app.cmd_gui",
    "training.cli",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="octscreen",
        description="OCT Screen: retinal OCT screening (the bundled model: normal / drusen / CNV / DME; "
        "research model, not for clinical use) with a distilled CNN that runs on the CPU.",
    )
    p.add_argument("--version", action="version", version=f"octscreen {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(("app.", "training.")) and e.name == name:
                continue  # not written yet
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
