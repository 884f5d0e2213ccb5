"""``python -m modelbuilder.portal --workspace WS [--host H] [--port P]``: serve the portal."""

from __future__ import annotations

import argparse
import sys

from .. import settings
from ..errors import ModelBuilderError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelbuilder.portal", description=__doc__)
    parser.add_argument("--workspace", default=settings.default_workspace_name())
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None,
                        help="default: $MODELBUILDER_PORTAL_PORT or 8765")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="stop after this many seconds without a request")
    args = parser.parse_args(argv)
    from .server import serve

    try:
        serve(args.workspace, host=args.host, port=args.port, idle_exit_s=args.idle_exit)
    except ModelBuilderError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"Hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
