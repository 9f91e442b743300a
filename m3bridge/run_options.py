"""`m3bridge run`'s options, apart from the supervisor: building the command line of every `m3bridge` command must not
import what only the embedded stack needs (the local QuoteWerks database and the state store's libraries), or every
`m3bridge serve` would carry them in memory."""

from __future__ import annotations

import argparse
import os

from services import SERVICES


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    env = os.environ.get
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=int(env("M3B_RUN_KAFKA_PORT", "9092")),
        help="broker port; a free one is chosen when it is taken (env M3B_RUN_KAFKA_PORT)",
    )
    parser.add_argument(
        "--port-base",
        type=int,
        default=int(env("M3B_RUN_PORT_BASE", "8101")),
        help="first service port, 0 for free ports (env M3B_RUN_PORT_BASE)",
    )
    parser.add_argument(
        "--ion-port",
        type=int,
        default=int(env("M3B_RUN_ION_PORT", "8200")),
        help="ION API simulator port; a free one is chosen when it is taken (env M3B_RUN_ION_PORT)",
    )
    parser.add_argument(
        "--quotewerks-port",
        type=int,
        default=int(env("M3B_RUN_QUOTEWERKS_PORT", "8300")),
        help="QuoteWerks simulator port; a free one when taken (env M3B_RUN_QUOTEWERKS_PORT)",
    )
    parser.add_argument(
        "--quotewerks",
        choices=("sim", "db"),
        default=env("M3B_RUN_QUOTEWERKS", "sim"),
        help="sim: the QuoteWerks simulator over HTTP, with webhooks; db: a local SQLite database of QuoteWerks' "
        "schema (<state-dir>/quotewerks.db) that quote-ingest polls (env M3B_RUN_QUOTEWERKS)",
    )
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="do not approve the demo quote")
    parser.add_argument(
        "--keep-state", action="store_true", help="keep var/m3bridge.db (and var/quotewerks.db) from the last run"
    )
    parser.add_argument("--state-dir", default=env("M3B_RUN_STATE_DIR", "var"), help="where the SQLite file lives")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for every /readyz")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds a service may take to stop")
    parser.add_argument("--color", choices=("auto", "always", "never"), default=env("M3B_RUN_COLOR", "auto"))
    parser.add_argument("--only", nargs="*", choices=sorted(SERVICES), help="start only these services")
    return parser
