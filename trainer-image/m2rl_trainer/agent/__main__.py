"""`python -m m2rl_trainer.agent`: serve a tool environment, list its tools, write the tiny workplace.

  python -m m2rl_trainer.agent serve [--environment NAME] [--data DIR] [--host H] [--port P]
  python -m m2rl_trainer.agent tools [--environment NAME]        the tools' schemas (JSON)
  python -m m2rl_trainer.agent write-tiny-workplace DIR          the built-in workplace as CSV files

--data is a directory in NeMo Gym's `csv_data` layout (e.g. NeMo Gym's own
resources_servers/workplace_assistant/csv_data, which the Nemotron blend's workbench rows refer
to); without it the tiny built-in workplace is served. Exit codes: 0 done, 2 invalid input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from m2rl_trainer.agent.environment import ENVIRONMENTS, get_environment
from m2rl_trainer.agent.workplace import WorkplaceDataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m m2rl_trainer.agent", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="serve the environment over HTTP (NeMo Gym's resource-server routes)"
    )
    serve.add_argument("--environment", default="workplace_assistant", choices=sorted(ENVIRONMENTS))
    serve.add_argument("--data", type=Path, help="data directory (default: the tiny built-in workplace)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    tools = sub.add_parser("tools", help="print the tools' schemas as JSON")
    tools.add_argument("--environment", default="workplace_assistant", choices=sorted(ENVIRONMENTS))
    write = sub.add_parser("write-tiny-workplace", help="write the tiny built-in workplace as CSV files")
    write.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from m2rl_trainer.agent.service import ServiceConfig, serve

            environment = get_environment(args.environment).build(args.data)
            serve(environment, ServiceConfig(host=args.host, port=args.port))
        elif args.command == "tools":
            json.dump(get_environment(args.environment).build(None).tools(), sys.stdout, indent=2)
            print()
        else:
            from m2rl_trainer.agent.workplace.tiny import tiny_workplace

            print(tiny_workplace().write(args.dir))
    except (WorkplaceDataError, ValueError, OSError) as error:
        print(f"m2rl agent: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
