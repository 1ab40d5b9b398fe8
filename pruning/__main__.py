"""`python -m pruning ...` entry point."""

from pruning.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
