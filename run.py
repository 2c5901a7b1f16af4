#!/usr/bin/env python3
"""warpcam entry point: ``python run.py --help``."""
import sys

from warpcam.realtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
