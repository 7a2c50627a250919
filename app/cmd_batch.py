"""``octscreen batch PATH... --out DIR [--scheduler ADDRESS | --local-workers N] [screen options]``:
screen an archive as tasks on a Dask cluster.

When screening outgrows one process (a hospital archive), the work is split into units and each unit
is screened by the unchanged ``octscreen screen`` command, as one task of Dask's distributed scheduler
(an existing cluster given by ``--scheduler tcp://host:8786``, or a local cluster of ``--local-workers``
processes). No scheduling of our own: Dask places, retries and balances the tasks.

Units: every PATH that is a file is a unit; a folder whose entries include folders gives one unit
per entry (archives keep one folder per patient or study, so an exam never spans two units), files
directly inside such a folder form one more unit; a folder of files only is one unit.

Outputs: unit ``k`` writes into ``DIR/<unit>/`` (its reports, results.csv/json, exactly what
``octscreen screen`` writes; with ``--deidentify`` the folders are ``unit-001``..., never the input
names), and DIR gets the merged ``results.csv`` / ``results.json`` (each row with its ``unit``, the
report paths relative to DIR). Exit code: the worst of the units' (0, 1, 2) or 2 when a task failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from contextlib import redirect_stderr
from pathlib import Path

from app.cli import main
from core.choices import BACKENDS, DATE_POLICIES
from core.fileio import write_text_atomic

__all__ = ["register", "run", "split_units", "screen_unit"]

_PASS_THROUGH = ("model", "backend", "threads", "institution", "referring", "operator", "deid_dates")
_FLAGS = ("dicom", "deidentify", "overwrite")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand."""
    p = subparsers.add_parser(
        "batch",
        help="screen an archive as tasks on a Dask cluster (each unit: one `octscreen screen`)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (one folder per patient or study)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    where.add_argument(
        "--local-workers", type=int, default=2, metavar="N", help="start a local cluster of N processes (default 2)"
    )
    p.add_argument("--model", type=Path, metavar="CARD", help="model card JSON (default: the bundled model)")
    p.add_argument("--dicom", action="store_true", help="also write the DICOM report and SR (as screen --dicom)")
    p.add_argument("--deidentify", action="store_true", help="de-identified outputs (as screen --deidentify)")
    p.add_argument("--deid-dates", choices=DATE_POLICIES, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="inference backend (as screen --backend)")
    p.add_argument("--threads", type=int, default=1, help="threads per task (default 1: one task per core)")
    p.add_argument("--institution", default=None, help="institution named in the reports")
    p.add_argument("--referring", default=None, metavar="NAME", help="referring clinician (as screen --referring)")
    p.add_argument("--operator", default=None, metavar="NAME", help="who took the scans (as screen --operator)")
    p.set_defaults(func=run)


def split_units(paths: list[Path]) -> list[list[Path]]:
    """The units of work for ``paths`` (see the module docstring), in the order given."""
    units: list[list[Path]] = []
    for path in paths:
        if not path.is_dir():
            units.append([path])
            continue
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        folders = [p for p in entries if p.is_dir()]
        if not folders:
            units.append([path])
            continue
        units.extend([f] for f in folders)
        loose = [p for p in entries if not p.is_dir()]
        if loose:
            units.append(loose)
    return units


def _unit_names(units: list[list[Path]], deidentify: bool) -> list[str]:
    names, seen = [], set()
    for i, unit in enumerate(units, start=1):
        base = f"unit-{i:03d}" if deidentify else re.sub(r"[^A-Za-z0-9._-]+", "_", unit[0].stem)[:60] or "unit"
        name, k = base, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        names.append(name)
    return names


def screen_unit(paths: list[str], out: str, options: list[str]) -> tuple[int, str, str]:
    """One task: ``octscreen screen PATHS --out OUT OPTIONS`` in this worker process. Returns (exit
    code, its stderr, the unit's results.csv text or '')."""
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["screen", *paths, "--out", out, *options])
    results = Path(out) / "results.csv"
    return code, err.getvalue(), results.read_text(encoding="utf-8") if results.exists() else ""


def _options(args: argparse.Namespace) -> list[str]:
    opts: list[str] = []
    for name in _PASS_THROUGH:
        value = getattr(args, name, None)
        if value is not None:
            opts += [f"--{name.replace('_', '-')}", str(value)]
    opts += [f"--{name}" for name in _FLAGS if getattr(args, name, False)]
    return opts


def _client(args: argparse.Namespace):
    from dask.distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler), None
    cluster = LocalCluster(
        n_workers=max(1, args.local_workers), threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster), cluster


def run(args: argparse.Namespace) -> int:
    """Split, submit one screen task per unit, merge the results; see the module docstring."""
    try:
        from dask.distributed import as_completed
    except ImportError:
        print("error: octscreen batch needs Dask: pip install 'octscreen[cluster]'", file=sys.stderr)
        return 2
    from tqdm import tqdm  # noqa: PLC0415 (start-up: tqdm, +40 ms on octscreen --help)

    out: Path = args.out
    units = split_units([Path(p) for p in args.paths])
    if not units:
        print("error: nothing to screen", file=sys.stderr)
        return 2
    names = _unit_names(units, args.deidentify)
    merged = [out / "results.csv", out / "results.json"]
    if any(p.exists() for p in merged) and not args.overwrite:
        print(f"error: {out}/results.csv or results.json already exist; use --overwrite", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    options = _options(args)
    client, cluster = _client(args)
    results: dict[int, tuple[int, str, str]] = {}
    try:
        futures = {
            client.submit(screen_unit, [str(p) for p in unit], str(out / name), options, pure=False): i
            for i, (unit, name) in enumerate(zip(units, names, strict=True))
        }
        with tqdm(total=len(futures), unit="unit", desc="screening", disable=None, file=sys.stderr) as bar:
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as e:  # a task that died (worker lost, ...): reported, the others go on
                    results[i] = (2, f"error: task failed ({type(e).__name__}: {e})\n", "")
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    rows: list[dict[str, str]] = []
    columns = ["unit"]  # the units' own columns, in their order (screen adds one per class)
    worst = 0
    for i, name in enumerate(names):
        code, err, text = results[i]
        worst = max(worst, code)
        for line in err.splitlines():
            if line.startswith(("error:", "note:")):
                print(f"[{name}] {line}", file=sys.stderr)
        reader = csv.DictReader(io.StringIO(text))
        columns += [c for c in reader.fieldnames or [] if c not in columns]
        for row in reader:
            for key in ("report_file", "dicom_file", "sr_file"):
                if row.get(key):
                    row[key] = f"{name}/{row[key]}"
            rows.append({"unit": name, **row})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "results.csv", buf.getvalue(), overwrite=True)
    summary = {
        "units": [{"unit": n, "exit_code": results[i][0]} for i, n in enumerate(names)],
        "eyes": rows,
        "deidentified": bool(args.deidentify),
    }
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2), overwrite=True)
    print(f"screened {len(units)} unit(s), {len(rows)} eye(s) -> {out}")
    return worst
