"""``treadle plugins``: every plugin, where it comes from, its hooks and what it registers."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from treadle.errors import TreadleError
from treadle.registry import KINDS
from treadle_cli.table import format_table

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = ["PluginsCommand", "describe_plugins", "hook_order"]


def describe_plugins(manager: PluginManager, *, check: bool = False) -> list[dict[str, Any]]:
    """One record per plugin: name, distribution, version, status, error, hooks and the names
    it registers per kind (filling every registry; a clash shows as that plugin's error).

    :param check: also load every name registered as a ``"module:attr"`` reference (this
        imports the implementations, torch among them); one that fails to import or to fit
        its kind makes its plugin ``broken``, with the error.
    """
    registered: dict[str, dict[str, list[str]]] = {}
    registry_errors: dict[str, str] = {}
    load_errors: dict[str, list[str]] = {}
    for kind in KINDS:
        try:
            entries = manager.registry(kind).entries()
        except TreadleError as err:
            registry_errors[kind] = str(err)
            continue
        for entry in entries:
            registered.setdefault(entry.provenance.plugin, {}).setdefault(kind, []).append(
                entry.name
            )
            if check:
                try:
                    entry.load()
                except TreadleError as err:
                    load_errors.setdefault(entry.provenance.plugin, []).append(str(err))
    records = []
    for info in manager.plugin_infos():
        errors = [info.error] if info.error else []
        errors += load_errors.get(info.name, [])
        records.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "target": info.target,
                "status": "broken" if errors else info.status,
                "error": " ".join(errors) or None,
                "hooks": manager.hooks_of(info.name),
                "registers": registered.get(info.name, {}),
            }
        )
    runtime = registered.get("runtime")
    if runtime:
        records.append(
            {
                "name": "runtime",
                "distribution": None,
                "version": None,
                "target": "register() calls",
                "status": "registered",
                "error": None,
                "hooks": [],
                "registers": runtime,
            }
        )
    for kind, error in registry_errors.items():
        records.append(
            {
                "name": f"<{kind} registry>",
                "distribution": None,
                "version": None,
                "target": "",
                "status": "broken",
                "error": error,
                "hooks": [],
                "registers": {},
            }
        )
    return records


def hook_order(manager: PluginManager) -> dict[str, list[str]]:
    """For every hook, the plugins implementing it in the order they are called.

    Lifecycle hooks run in pluggy's call order (last registered first, ``tryfirst`` /
    ``trylast`` and wrappers honoured); registration hooks are walked in registration order.
    """
    order: dict[str, list[str]] = {}
    for name in sorted(vars(manager.hook)):
        caller = getattr(manager.hook, name)
        if not getattr(caller, "has_spec", lambda: False)():
            continue
        impls = caller.get_hookimpls()
        if not name.startswith("treadle_register_"):
            impls = list(reversed(impls))
        order[name] = [
            impl.plugin_name + (" (wrapper)" if impl.wrapper or impl.hookwrapper else "")
            for impl in impls
        ]
    return order


class PluginsCommand:
    """``treadle plugins [--json] [--hooks]``."""

    help = "list plugins: distribution, version, status, hooks and registered names"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument(
            "--hooks",
            action="store_true",
            help="print every hook with its implementations in call order",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="also import every name registered by reference and check it (loads torch)",
        )

    def run(self, args: argparse.Namespace) -> int:
        manager: PluginManager = args.plugin_manager
        if args.hooks:
            order = hook_order(manager)
            if args.json:
                print(json.dumps(order, indent=2))
            else:
                for hook, plugins in order.items():
                    print(f"{hook}: {', '.join(plugins) or '-'}")
            return 0
        records = describe_plugins(manager, check=args.check)
        status = 1 if any(record["status"] == "broken" for record in records) else 0
        if args.json:
            print(json.dumps(records, indent=2))
            return status
        rows = []
        for record in records:
            registers = "; ".join(
                f"{kind}: {', '.join(names)}" for kind, names in sorted(record["registers"].items())
            )
            rows.append(
                [
                    record["name"],
                    record["distribution"] or "-",
                    record["version"] or "-",
                    record["status"],
                    registers or "-",
                ]
            )
        print(format_table(["plugin", "distribution", "version", "status", "registers"], rows))
        for record in records:
            if record["error"]:
                print(f"\n{record['name']} is broken: {record['error']}")
        return status
