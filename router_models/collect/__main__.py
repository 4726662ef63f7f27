"""``python -m router_models.collect [options]``: ``collect`` without the trainer CLI."""

from __future__ import annotations

import argparse
import sys

from router_models.collect.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router_models.collect")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["collect", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
