"""``python -m router_models`` = ``dars-train``."""

from router_models.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
