"""`m3bridge keys` (`make keys`): the secrets docker compose mounts, generated where the bridge can, private on the
host and readable in the containers.

Compose bind-mounts each secret file as it is on the host (the long syntax's uid, gid and mode apply to Swarm only),
so the containers' users (the bridge's 10001, PostgreSQL's, Alertmanager's) read it with the host's ownership and
mode. The files are therefore mode 0644 and the directory that holds them mode 0700: no other user of the host can
reach them, and every container user can read the one file mounted into it. The same is applied to what the site
puts there itself (the `.ionapi` file, the QuoteWerks adapter's key, Alertmanager's credentials).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

#: Secrets the site supplies (the QuoteWerks adapter's key, the QuoteWerks SQL login's password, where Alertmanager
#: sends alerts): created empty so docker compose starts, for the operator to fill in; never overwritten.
SITE_SUPPLIED_SECRETS = (
    "quotewerks-api-key",
    "quotewerks-sql-password",
    "alertmanager-smtp-password",
    "alertmanager-pager-token",
)
DIRECTORY_MODE, FILE_MODE = 0o700, 0o644


def generated(out: Path) -> dict[Path, str]:
    from services import m3_callers

    keys = {name: secrets.token_urlsafe(32) for name in m3_callers()}
    files = {out / "service-keys.json": json.dumps(keys, indent=2) + "\n"}
    files |= {out / f"{name}.key": key for name, key in keys.items()}
    # The secrets senders put in a custom header: configure the same value in QuoteWerks' webhook / ION.
    files |= {out / "webhook-secret": secrets.token_urlsafe(32), out / "bod-secret": secrets.token_urlsafe(32)}
    # PostgreSQL's password in docker compose: the postgres container and M3B_STATE_PASSWORD read this file.
    files |= {out / "postgres-password": secrets.token_urlsafe(32)}
    # The bridge's own API: operators (M3B_OPERATOR_KEY, e.g. sync now) and readers (M3B_READ_KEY, availability).
    files |= {out / "operator-key": secrets.token_urlsafe(32), out / "read-key": secrets.token_urlsafe(32)}
    return files


def protect(out: Path) -> list[Path]:
    """The directory private (0700), every secret file in it readable by the containers' users (0644). Returns the
    files whose mode it changed."""
    out.chmod(DIRECTORY_MODE)
    changed = []
    for path in sorted(out.iterdir()):
        if path.is_file() and path.name != "README.md" and stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            path.chmod(FILE_MODE)
            changed.append(path)
    return changed


def write_keys(out: Path, *, force: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(DIRECTORY_MODE)  # before any secret is in it
    files = generated(out)
    existing = [path for path in files if path.exists()]
    if existing and not force:
        changed = protect(out)
        fixed = f"; made {len(changed)} readable in the containers" if changed else ""
        print(f"{existing[0]} exists: the keys are kept{fixed} (--force replaces all keys; restart every service "
              "afterwards)")  # fmt: skip
        return 0
    for path, text in files.items():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
    for name in SITE_SUPPLIED_SECRETS:
        path = out / name
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    protect(out)
    print(f"wrote {len(files)} key files to {out}: the directory is private (mode 0700), the files readable by the "
          "containers' users (0644); never commit them")  # fmt: skip
    return 0
