#!/usr/bin/env python3
"""Entry point: `python cli.py COMMAND` is the same as the `skinonnx` console script."""

from skinonnx.cli import main

if __name__ == "__main__":
    main()
