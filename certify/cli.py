"""The `certify` command (DESIGN section 7).

Exit codes (certify.errors): 0 success; 1 a check or claim failed; 2 unusable certificate input;
64 usage error; 65 invalid input data; 66 unsupported model, layer or method; 70 internal error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import certify
from certify.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CertifyError


class _Parser(argparse.ArgumentParser):
    """argparse with the package's usage-error exit code (64) instead of 2, which `verify` reserves."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _cmd_demo(args: argparse.Namespace) -> int:
    from certify.demo import DemoConfig, run_demo

    summary = run_demo(Path(args.out), DemoConfig.quick() if args.quick else DemoConfig())
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"certify demo: wrote {summary['files']['html']} (and {Path(summary['files']['markdown']).name}, heatmaps.png, THEOREMS.md, summary.json)")
        bad = [i for i, v in summary["theorems"].items() if v in ("violated", "error")]
        if bad:
            print(f"theorem checks that failed: {', '.join(bad)}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from proofs_checks.runner import has_violation, run_checks, table_markdown, write_table

    results = run_checks(only=args.only, quick=args.quick, progress=True)
    md, js = write_table(results, Path(args.out), quick=args.quick)
    if args.json:
        print(json.dumps({"results": [r.as_dict() for r in results], "markdown": str(md), "json": str(js)}, indent=2, default=str))
    else:
        table = table_markdown(results, args.quick, include_missing=not args.only)
        print(table.split("\n## ")[0].rstrip())
        print(f"\nwrote {md} and {js}")
    return EXIT_FAILED if has_violation(results) else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="certify", description="Certified explanations for PyTorch classifiers.")
    parser.add_argument("--version", action="version", version=f"certify {certify.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="explain, certify and report on the embedded default model")
    demo.add_argument("--out", default="demo-output", help="output directory (default: demo-output)")
    demo.add_argument("--quick", action="store_true", help="fewer examples and samples (about a minute)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(run=_cmd_demo)

    check = sub.add_parser("check", help="run the theorem checks and write the theorem table")
    check.add_argument("--quick", action="store_true", help="fewer cases per theorem")
    check.add_argument("--only", nargs="+", metavar="ID", help="run only these theorem ids")
    check.add_argument("--out", default="reports", help="directory for THEOREMS.md/.json (default: reports)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.set_defaults(run=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CertifyError as exc:
        print(f"certify {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
