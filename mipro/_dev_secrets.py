"""The development profile's server key: made once, kept 0600 in the data directory.

`mipro up`, `mipro demo` and the tests start the orchestrator through `Stack`, which calls
`dev_secrets_env`: when `MIPRO_SECRETS_KEY` is unset, the key in `<data dir>/secrets.key` is
used, and made (32 random bytes, base64) when the file does not exist. A deployment sets
`MIPRO_SECRETS_KEY` itself and keeps it out of the data directory (see README "Environment
keys"); the orchestrator refuses to start without one.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

SECRETS_KEY_VARIABLE = "MIPRO_SECRETS_KEY"
DEV_KEY_FILE = "secrets.key"


def dev_secrets_env(env: Mapping[str, str], data_dir: Path) -> dict[str, str]:
    """`{"MIPRO_SECRETS_KEY": <the data dir's key>}` when `env` sets none, else `{}`."""
    if env.get(SECRETS_KEY_VARIABLE):
        return {}
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    path = data_dir / DEV_KEY_FILE
    try:  # O_EXCL: two stacks starting at once agree on one key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return {SECRETS_KEY_VARIABLE: path.read_text().strip()}
    key = base64.b64encode(os.urandom(32)).decode()
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return {SECRETS_KEY_VARIABLE: key}
