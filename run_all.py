#!/usr/bin/env python
"""Run the numbered notebooks in order with papermill into reports/<run-id>/ (see tootpipe.report.runner).

    python run_all.py [--params params/default.yaml] [--only 02,03] [--keep-services]
"""
import argparse
import sys

from tootpipe.report.runner import run_notebooks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/default.yaml")
    ap.add_argument("--only", help="comma-separated notebook numbers, e.g. 02,03")
    ap.add_argument("--keep-services", action="store_true", help="leave the embedded services running")
    ap.add_argument("--reports-dir", help="where run folders go (default: reports.dir from the parameters)")
    ap.add_argument("--verbose", action="store_true", help="kernel, JVM and Spark output on the console too")
    args = ap.parse_args()
    only = [x.strip().zfill(2) for x in args.only.split(",")] if args.only else None
    code, _ = run_notebooks(args.params, only, args.keep_services, args.reports_dir, quiet=not args.verbose)
    return code


if __name__ == "__main__":
    sys.exit(main())
