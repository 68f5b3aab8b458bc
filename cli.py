"""Thin entry point: `python cli.py ...` behaves exactly like the `itaudit` console script."""

from itaudit.cli import main

if __name__ == "__main__":
    main()
