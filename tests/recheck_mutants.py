"""Run mutants again outside mutmut's fork server, one plain pytest each.

mutmut 3 counts a timeout as a kill. On a loaded 2-core machine some of its
timeouts are not: the same mutant's tests, run by plain pytest, pass (a
survivor) or fail (a kill) well within the limit. This script settles them.
Run it from the repository root after ``mutmut run``::

    python tests/recheck_mutants.py                  # every timeout
    python tests/recheck_mutants.py --status survived "skae.cli.*"
    python tests/recheck_mutants.py --status survived --also tests/test_cli.py

``--also`` runs more tests first: tests written since mutmut mapped which
tests reach which function (copy the new tests into ``mutants/tests``);
with ``--only-also``, only those: a survivor of mutmut's run that passes
them too still survives.

For each mutant it runs the tests that mutmut found reaching its function,
fastest first, stopping at the first failure, with the mutant switched on
(``MUTANT_UNDER_TEST``), and prints ``killed``, ``survived`` or ``timeout``
(past ``--timeout`` seconds) with the mutant's name.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

#: mutmut's exit codes by status (mutmut/stats.py).
STATUS_CODES = {
    "timeout": {36, -24, 24, 152, 255},
    "survived": {0},
    "killed": {1, 3},
}


def mutants(folder: Path, status: str, patterns: list[str]) -> list[str]:
    """Names of the mutants of that status in mutmut's records, in order."""
    codes = STATUS_CODES[status]
    names = []
    for meta in sorted(folder.rglob("*.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code in codes and any(fnmatch.fnmatch(name, p) for p in patterns):
                names.append(name)
    return names


def tests_of(name: str, stats: dict) -> list[str]:
    """The tests reaching the mutant's function, fastest first."""
    function = name.rsplit("__mutmut_", 1)[0]
    tests = stats["tests_by_mangled_function_name"].get(function, [])
    duration = stats["duration_by_test"]
    return sorted(tests, key=lambda test: duration.get(test, 0.0))


def recheck(name: str, tests: list[str], folder: Path, timeout: float) -> str:
    env = {**os.environ, "MUTANT_UNDER_TEST": name, "PYTHONPATH": str(folder)}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly"]
    try:
        result = subprocess.run(
            [*command, *tests],
            cwd=folder,
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if result.returncode == 0 else "killed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", default=["*"])
    parser.add_argument("--status", choices=sorted(STATUS_CODES), default="timeout")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--also", nargs="*", default=[], metavar="TEST")
    parser.add_argument("--only-also", action="store_true")
    args = parser.parse_args(argv)
    stats = json.loads((args.mutants / "mutmut-stats.json").read_text())
    for name in mutants(args.mutants, args.status, args.patterns):
        mapped = [] if args.only_also else tests_of(name, stats)
        tests = [*args.also, *mapped]
        print(recheck(name, tests, args.mutants, args.timeout), name, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
