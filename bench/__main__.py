"""`python -m bench`: run every benchmark in turn; a benchmark not written yet is skipped."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import cast

BENCHMARKS = (
    "bench.parser",
    "bench.options_load",
    "bench.relay",
    "bench.media",
    "bench.calls",
    "bench.flood",
)


def main() -> int:
    status = 0
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"== {name}: skipped (module not written yet)", flush=True)
            continue
        print(f"== {name}", flush=True)
        result = cast(Callable[[], object], module.main)()
        if isinstance(result, int) and result != 0:
            print(f"== {name}: failed with status {result}", flush=True)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
