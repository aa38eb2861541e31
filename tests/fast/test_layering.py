"""The layers of the tree: shared/ below the services, tools/ above them, and a gateway that
loads neither TensorFlow nor what only the workers import (its image ships neither)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, fresh_database

# Packages the gateway's image does not install, or does not ship (shared.runtime, tools).
NOT_IN_THE_GATEWAY_IMAGE = ("tensorflow", "keras", "numpy", "usearch", "onnx", "h5py", "tools")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def imports_under(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """File -> the forbidden modules it imports, for every Python file under ``folder``."""
    offenders = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(
            m
            for m in imported_modules(path)
            if any(m == f or m.startswith(f + ".") for f in forbidden)
        )
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    return offenders


def test_shared_imports_nothing_from_services_client_or_tools():
    assert imports_under("shared", ("services", "client", "tools", "deploy", "bench")) == {}


def test_only_the_workers_import_the_worker_runtime():
    shared_outside_runtime = {
        path: modules
        for path, modules in imports_under("shared", ("shared.runtime",)).items()
        if not path.startswith("shared/runtime/")
    }
    assert shared_outside_runtime == {}
    assert imports_under("services/gateway", ("shared.runtime", "tools")) == {}


def test_the_services_never_import_the_tools():
    assert imports_under("services", ("tools",)) == {}


def test_the_gateway_runs_without_tensorflow_or_the_worker_runtime(redis_url):
    """Every gateway module imported and two requests served, in a fresh interpreter."""
    script = """
import importlib, json, pkgutil, sys
import services.gateway
for module in pkgutil.walk_packages(services.gateway.__path__, "services.gateway."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
from services.gateway.app import create_app
client = create_app().test_client()
statuses = [client.get(path).status_code for path in ("/api/v1/health", "/api/v1/openapi.json")]
print(json.dumps({"statuses": statuses, "modules": sorted(sys.modules)}))
"""
    env = {
        **os.environ,
        "REDIS_URL": fresh_database(redis_url),
        "API_KEY": "layering-test-key-0123456789",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [200, 200]
    loaded = [
        m
        for m in report["modules"]
        if m.startswith("shared.runtime") or m.split(".")[0] in NOT_IN_THE_GATEWAY_IMAGE
    ]
    assert loaded == []
    assert "services.gateway.app" in report["modules"]
