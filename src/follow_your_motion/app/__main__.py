"""`python -m follow_your_motion.app [--runs DIR] [--host H] [--port P]`: the same as `fym app`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from .server import serve

parser = argparse.ArgumentParser(prog="python -m follow_your_motion.app", description=__doc__)
parser.add_argument("--runs", type=Path, default=Path("runs"), help="runs folder (default: runs/)")
parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
parser.add_argument("--port", type=int, default=7860)
args = parser.parse_args()
try:
    serve(args.runs, args.host, args.port)
except (InputError, OSError) as err:  # as `fym` reports them: one line, exit code 2
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
