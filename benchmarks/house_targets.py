"""The targets of the restructuring issue, measured on the tree as it is: met or missed, in one report.

Runs ``lint-imports`` and ``ruff``, measures every function's length (code
lines: signature and docstring excluded; and whole, docstring included), counts
the README's lines, checks docs/architecture.md exists, and reads the refactor
and served-bytes checks (``benchmarks/refactor_check.py``,
``benchmarks/served_bytes.py``)::

    python benchmarks/house_targets.py --out reports/house_targets.json
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
MAX_README_LINES = 250


def function_lengths(package: Path) -> list[dict]:
    """Every function: its code lines (after the docstring) and its whole length, longest code first."""
    rows = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:] or body
            rows.append(
                {
                    "function": f"{path.relative_to(ROOT)}:{node.lineno} {node.name}",
                    "code_lines": node.end_lineno - body[0].lineno + 1,
                    "whole_lines": node.end_lineno - node.lineno + 1,
                }
            )
    return sorted(rows, key=lambda r: -r["code_lines"])


def command(args: list[str]) -> tuple[int, str]:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports/house_targets.json")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    imports_rc, imports_out = command([str(bin_dir / "lint-imports")])
    ruff_rc, ruff_out = command([str(bin_dir / "ruff"), "check", "--statistics", "src", "tests", "benchmarks", "docs"])
    format_rc, _ = command([str(bin_dir / "ruff"), "format", "--check", "src", "tests", "benchmarks", "docs"])
    lengths = function_lengths(ROOT / "src/legato")
    outside_commands = [r for r in lengths if "/commands/" not in r["function"]]
    readme = len((ROOT / "README.md").read_text().splitlines())
    refactor = json.loads((ROOT / "reports/refactor_check.json").read_text())
    served = json.loads((ROOT / "reports/served_bytes.json").read_text())
    targets = {
        "import_contract_0_violations": {"value": "kept" if imports_rc == 0 else "broken", "met": imports_rc == 0},
        "ruff_0_findings": {"value": ruff_out.strip().splitlines()[-1] if ruff_out.strip() else "", "met": ruff_rc == 0 and format_rc == 0},
        "no_function_over_80_code_lines_outside_typer_options": {
            "value": outside_commands[0]["code_lines"],
            "met": outside_commands[0]["code_lines"] <= MAX_FUNCTION_LINES,
        },
        "no_function_over_80_lines_with_docstring_outside_commands": {
            "value": sum(r["whole_lines"] > MAX_FUNCTION_LINES for r in outside_commands),
            "met": all(r["whole_lines"] <= MAX_FUNCTION_LINES for r in outside_commands),
        },
        "readme_under_250_lines": {"value": readme, "met": readme < MAX_README_LINES},
        "architecture_page_exists": {"value": (ROOT / "docs/architecture.md").is_file(), "met": (ROOT / "docs/architecture.md").is_file()},
        "pipeline_outputs_unchanged": {"value": refactor["counts"], "revisions": refactor["revisions"], "met": refactor["unchanged"]},
        "served_bytes_unchanged": {"value": served["same_bytes"], "revisions": served["revisions"], "met": served["all_same"]},
    }
    report = {
        "command": "python benchmarks/house_targets.py",
        "targets": targets,
        "longest_five_by_code": lengths[:5],
        "longest_five_whole_outside_commands": sorted(outside_commands, key=lambda r: -r["whole_lines"])[:5],
        "import_contract": [line for line in imports_out.splitlines() if "Analyzed" in line or "kept" in line.lower()],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v["met"] for k, v in targets.items()}, indent=2))


if __name__ == "__main__":
    main()
