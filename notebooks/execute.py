"""Runs every notebook in this folder headlessly (nbclient) against a running tracehouse.

    TRACEHOUSE_FLIGHT_URL=grpc://127.0.0.1:8815 TRACEHOUSE_TENANT=shop \\
        python3 notebooks/execute.py [--write] [--out DIR]

Exits non-zero when any cell fails. Prints one JSON line per notebook: its cells, the plots
it drew, and the `key: value` lines of its last cell (the findings). `--write` saves the
executed notebooks, outputs and plots included, over the originals; `--out DIR` saves them
in DIR instead.
"""

import argparse
import json
import pathlib
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = pathlib.Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="save outputs into the notebooks")
    parser.add_argument("--out", type=pathlib.Path, help="save executed notebooks in this folder")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    failed = False
    for path in sorted(HERE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        )
        try:
            client.execute()
        except CellExecutionError as e:
            print(f"{path.name}: a cell failed:\n{e}", file=sys.stderr)
            failed = True
            continue
        images = sum(
            1
            for cell in nb.cells
            if cell.cell_type == "code"
            for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})
        )
        last = nb.cells[-1].get("outputs", [])
        text = "".join(o.get("text", "") for o in last if o.get("output_type") == "stream")
        findings = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
        summary = {
            "notebook": path.name,
            "cells": sum(1 for c in nb.cells if c.cell_type == "code"),
            "images": images,
            "findings": findings,
        }
        print(json.dumps(summary), flush=True)
        if args.write:
            nbformat.write(nb, path)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.out / path.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
