"""Run the ION API simulator: `python -m simulators.ion --host 127.0.0.1 --port 8200 --ionapi var/sim-tenant.ionapi`.

Writes the `.ionapi` file (mode 0600) for its own base URL before it starts serving. `--bod-url URL` delivers the BODs
of M3 changes there as ION does (IMS v3 multipart messages to the IMS end point at URL, e.g. bod-listener's /ims;
`--bod-protocol raw` POSTs the bare XML instead), with the secret from ION_BOD_SECRET in the `--bod-secret-header`
header (kept off the command line). Secrets are never printed.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
from pathlib import Path

import uvicorn

from simulators.ion.app import create_app
from simulators.ion.auth import write_ionapi
from simulators.ion.config import IonSimConfig

log = logging.getLogger("simulators.ion")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.ion", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--ionapi", type=Path, default=Path("var/sim-tenant.ionapi"), help=".ionapi file to write")
    parser.add_argument("--config", type=Path, help="IonSimConfig as JSON")
    parser.add_argument("--public-url", help="base URL written as `iu` (default http://HOST:PORT)")
    parser.add_argument("--client-credentials", action="store_true", help="write an .ionapi without saak/sask")
    parser.add_argument("--bod-url", help="deliver the BODs of M3 changes to this IMS end point (bod-listener's /ims)")
    parser.add_argument("--bod-protocol", choices=["ims", "raw"], help="ims (default): IMS v3; raw: POST the XML")
    parser.add_argument("--bod-secret-header", default="X-M3Bridge-BOD-Secret", help="header for ION_BOD_SECRET")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    config = IonSimConfig.model_validate_json(args.config.read_text()) if args.config else IonSimConfig()
    if args.bod_url:
        secret = os.environ.get("ION_BOD_SECRET", "")
        headers = {**config.bod_headers, **({args.bod_secret_header: secret} if secret else {})}
        update: dict[str, object] = {"bod_target_url": args.bod_url, "bod_headers": headers}
        if args.bod_protocol:
            update["bod_protocol"] = args.bod_protocol
        config = config.model_copy(update=update)
    base_url = args.public_url or f"http://{args.host}:{args.port}"
    app = create_app(config)
    write_ionapi(args.ionapi, config, base_url, service_account=not args.client_credentials)
    logging.basicConfig(level=args.log_level.upper())
    log.info("ION simulator for tenant %s at %s; credentials written to %s", config.tenant, base_url, args.ionapi)
    # The M3 store is built: frozen out of the collector's sight, a full collection does not stall the loop that
    # counts requests against the throttling policy (as the services do, shared.platform.runtime.settle_the_collector).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
