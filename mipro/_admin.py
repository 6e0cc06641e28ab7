"""The operator's commands on tenants and API keys: `mipro keys ...` and `mipro tenants ...`.

They open the job store of the data directory directly (not the public API), so they work
beside a running orchestrator, which notices a change within `MIPRO_API_KEY_CACHE_MS`.
A new key is printed once and stored only as its peppered hash.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator import _tenants as tenants
from orchestrator._migrations import SchemaError
from orchestrator._models import TenantStatus
from orchestrator._store import JobStore
from orchestrator._store_factory import make_store

from ._settings import Settings


def _print(*parts: object) -> None:
    print(*parts, flush=True)


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    _print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        _print("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())


async def _keys(store: JobStore, settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "create":
        pepper, made = tenants.load_pepper(settings)
        if made is not None:
            _print(f"made an API-key pepper, saved to {made} (mode 0600); outside development "
                   "set MIPRO_API_KEY_PEPPER instead")
        record, secret = await tenants.create_key(store, pepper, args.tenant, args.name)
        _print(f"created API key {record.key_id} for tenant {record.tenant_id}")
        _print(f"key: {secret}")
        _print("(shown only now: it is stored hashed and cannot be shown again)")
        return 0
    if args.action == "revoke":
        record = await tenants.revoke_key(store, args.key_id)
        _print(f"revoked {record.key_id} (tenant {record.tenant_id}) at {_when(record.revoked_at)}"
               "; the tenant's jobs keep running")
        return 0
    rows = [{"id": k.key_id, "tenant": k.tenant_id, "name": k.name or "-", "prefix": k.prefix,
             "created": _when(k.created_at), "revoked": _when(k.revoked_at)}
            for k in await store.list_api_keys()]
    if args.json:
        _print(json.dumps(rows, indent=2))
    else:
        _table(rows, ("id", "tenant", "name", "prefix", "created", "revoked"))
    return 0


async def _tenants(store: JobStore, settings: Settings, args: argparse.Namespace) -> int:
    if args.action in ("disable", "enable"):
        status = TenantStatus.DISABLED if args.action == "disable" else TenantStatus.ACTIVE
        await tenants.set_tenant_status(store, args.tenant, status)
        _print(f"tenant {args.tenant} is {status.value}"
               + ("; its keys are refused and its queued and running jobs are cancelled"
                  if status is TenantStatus.DISABLED else ""))
        return 0
    rows = [{"id": t.tenant_id, "name": t.name, "status": t.status.value,
             "created": _when(t.created_at)} for t in await store.list_tenants()]
    if args.json:
        _print(json.dumps(rows, indent=2))
    else:
        _table(rows, ("id", "name", "status", "created"))
    return 0


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Runs `mipro keys ...` or `mipro tenants ...` on the data directory's store."""
    command: Callable[[JobStore, Settings, argparse.Namespace], Awaitable[int]] = (
        _keys if args.command == "keys" else _tenants)
    store = make_store(settings)
    try:
        await store.open()
    except SchemaError as exc:
        _print(f"error: {exc}")
        return 1
    try:
        return await command(store, settings, args)
    except tenants.TenantError as exc:
        _print(f"error: {exc}")
        return 1
    finally:
        await store.close()


def add_parsers(commands: Any, data_dir_flag: Callable[[argparse.ArgumentParser], None],
                handler: Callable[[argparse.Namespace], int]) -> None:
    """Adds `keys` and `tenants` to the `mipro` command's subparsers."""
    keys = commands.add_parser("keys", help="create, list and revoke API keys (operator)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key (and the tenant when new); "
                                               "prints it once")
    create.add_argument("--tenant", required=True, help="the tenant id, e.g. acme")
    create.add_argument("--name", default="", help="a label for the key, e.g. ci")
    listing = actions.add_parser("list", help="every key: id, tenant, prefix, created, revoked")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="refuse the key from now on")
    revoke.add_argument("key_id")
    tenants_parser = commands.add_parser("tenants", help="list, disable and enable tenants")
    tenant_actions = tenants_parser.add_subparsers(dest="action", required=True)
    tenant_list = tenant_actions.add_parser("list")
    tenant_list.add_argument("--json", action="store_true")
    for name in ("disable", "enable"):
        tenant_actions.add_parser(name).add_argument("tenant")
    for parser in (*actions.choices.values(), *tenant_actions.choices.values()):
        data_dir_flag(parser)
    keys.set_defaults(handler=handler)
    tenants_parser.set_defaults(handler=handler)
