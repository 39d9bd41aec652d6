"""`adapt env` and `adapt --version`: what a bug report needs (like `hf env`)."""

from __future__ import annotations

import platform
import sys
from typing import Any

import typer

from registry.cli.output import console, print_json, sqlite_file

# The packages whose versions decide adapt's behaviour, in the order a bug report wants them.
KEY_PACKAGES = ("torch", "peft", "transformers", "bitsandbytes", "huggingface_hub")
OTHER_PACKAGES = ("safetensors", "accelerate", "typer", "click", "rich", "sqlalchemy",
                  "sqlmodel", "textual", "numpy", "psycopg")


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("env")(env)


def package_version(name: str) -> str | None:
    """The installed distribution's version (no import), or None when it is not installed."""
    from importlib import metadata  # only `env` and `--version` need it: keep start-up light

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        alias = name.replace("_", "-")
        if alias != name:
            return package_version(alias)
        return None


def version_line() -> str:
    """`adapt 0.1.0 (torch 2.13.0, peft ..., ...)`: imports none of those packages."""
    from registry import __version__

    parts = [f"{name} {package_version(name) or 'not installed'}" for name in KEY_PACKAGES]
    return f"adapt {__version__} ({', '.join(parts)})"


def collect_env() -> dict[str, Any]:
    """Registry in use, device and package versions. Imports torch (for the device) only here."""
    from registry import __version__
    from registry.catalog.stats import registry_counts
    from registry.config import load_settings, redact_url
    from registry.errors import AdaptError
    from registry.registry import Registry

    settings = load_settings()
    db_file = sqlite_file(settings.db_url)
    registry: dict[str, Any] = {
        "home": str(settings.home),
        "database": redact_url(settings.db_url),
        # a remote store (s3://...) where one is configured, else the local directory
        "blob_store": redact_url(getattr(settings, "blob_url", None) or str(settings.blob_dir)),
        "blob_backend": "s3" if (settings.blob_url or "").startswith("s3://") else "local",
        "config_file": _config_file(settings.home),
        "exists": settings.home.exists() if db_file is None else db_file.exists(),
    }
    if registry["exists"]:  # never create a registry just to describe it
        try:
            with Registry() as reg:
                registry["schema_version"] = reg.catalog.schema_version()
                registry["counts"] = registry_counts(reg.catalog)
        except AdaptError as error:  # unreachable database: still a useful report
            registry["error"] = str(error)
    packages = {name: package_version(name) for name in (*KEY_PACKAGES, *OTHER_PACKAGES)}
    return {
        "adapt": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "registry": registry,
        "device": _device(),
        "packages": packages,
    }


def _config_file(home: Any) -> str | None:
    """ADAPT_HOME/config.toml (written by `adapt init`) if there is one."""
    from registry.config import CONFIG_NAME

    path = home / CONFIG_NAME
    return str(path) if path.is_file() else None


def _device() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cuda": False, "torch": None}
    info: dict[str, Any] = {"cuda": bool(torch.cuda.is_available()),
                            "torch_cuda": torch.version.cuda}
    if info["cuda"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def env(
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts and bug reports."),
) -> None:
    """Show the registry in use, the device and package versions: paste it into a bug report.

    The database URL is shown with its password redacted. Nothing is created.

    Examples:

      adapt env

      adapt env --json
    """
    data = collect_env()
    if json_:
        print_json(data)
        return
    reg = data["registry"]
    rows = [
        ("adapt", data["adapt"]),
        ("python", f"{data['python']} ({data['executable']})"),
        ("platform", data["platform"]),
        ("ADAPT_HOME", reg["home"] + ("" if reg["exists"] else " (no registry yet)")),
        ("database", reg["database"]),
        ("blob store", f"{reg['blob_store']} ({reg['blob_backend']})"),
        ("config file", reg["config_file"] or "-"),
    ]
    if "schema_version" in reg:
        rows.append(("schema", reg["schema_version"] or "-"))
    for label, count in reg.get("counts", {}).items():
        rows.append((label.replace("_", " "), str(count)))
    if "error" in reg:
        rows.append(("registry error", reg["error"]))
    device = data["device"]
    cuda = f"cuda ({', '.join(device['gpus'])})" if device.get("cuda") else "cpu (no CUDA)"
    rows.append(("device", cuda))
    rows += [(name, version or "not installed") for name, version in data["packages"].items()]
    for label, value in rows:
        console.print(f"{label:<16} {value}", markup=False)  # folds long paths to fit
