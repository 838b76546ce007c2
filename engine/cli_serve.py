"""The `seedbed serve` command: load indexes, open the LLM, check the keys, run the HTTP API."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli_common import INDEX_ROOT, PROMPTS, friendly
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.llm.endpoint import EndpointSettings

__all__ = ["serve", "run_serve", "load_keys"]

KEYS_ENV = "SEEDBED_SERVE_KEYS"


def load_keys(key_file: Path | None) -> frozenset[str]:
    """API keys from a file (one per line, `#` comments) and/or SEEDBED_SERVE_KEYS (comma-separated).

    Raises:
        ConfigError: the file cannot be read, or a key is shorter than 16 characters.
    """
    keys = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if key_file is not None:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API key file {key_file}: {exc}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    for number, key in enumerate(keys, start=1):
        if len(key) < 16:
            raise ConfigError(f"API key #{number} is {len(key)} characters; use at least 16 (e.g. `openssl rand -hex 24`)")
    return frozenset(keys)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_serve(index_names: tuple[str, ...], root: Path, host: str, port: int, key_file: Path | None, no_auth: bool,
              jobs_dir: Path, cors: tuple[str, ...], endpoint: EndpointSettings, use_cache: bool,
              datasets: tuple[Path, ...] = ()) -> None:
    """Load everything, then serve until Ctrl-C. Raises ConfigError before binding on bad settings."""
    import uvicorn

    from engine.api import ServeConfig, create_app
    from engine.index.reader import Index
    from engine.llm.endpoint import open_llm

    if no_auth and not _loopback(host):
        raise ConfigError(f"--no-auth is only allowed on loopback, not --host {host}; give keys with --api-key-file")
    keys = frozenset() if no_auth else load_keys(key_file)
    if not no_auth and not keys:
        raise ConfigError(f"no API keys: give --api-key-file FILE or {KEYS_ENV}=key1,key2 (or --no-auth on loopback)")
    indexes = {name: Index.open(name, root) for name in index_names}
    cache_dir = None
    if use_cache:
        from engine.cache import default_cache_dir

        cache_dir = default_cache_dir()
    with open_llm(endpoint) as llm:
        job_llm = llm.clone() if hasattr(llm, "clone") else llm
        config = ServeConfig(indexes=indexes, api_keys=keys, auth=not no_auth, jobs_dir=jobs_dir,
                             cache_dir=cache_dir, cors_origins=tuple(cors),
                             datasets={Path(folder).resolve().name: Path(folder) for folder in datasets})
        app = create_app(config, llm, job_llm)
        click.echo(f"serving {', '.join(indexes) or 'no index'} on http://{host}:{port} (OpenAPI: /openapi.json; "
                   f"LLM {endpoint.describe()}; auth {'off' if no_auth else 'on'})", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")


@click.command()
@click.option("--index", "index_names", multiple=True, help="Index to serve (repeat for several; the first is the default).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-key-file", type=click.Path(path_type=Path), help="Accepted API keys, one per line (or SEEDBED_SERVE_KEYS).")
@click.option("--no-auth", is_flag=True, help="No API key needed (loopback hosts only).")
@click.option("--jobs-dir", type=click.Path(path_type=Path), default=Path("jobs"), show_default=True, help="Where synthesis jobs live.")
@click.option("--cors-origin", "cors", multiple=True, help="Allow this browser origin (CORS is off by default).")
@click.option("--dataset", "datasets", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A finished run folder to review at /review (repeat for several).")
@click.option("--base-url", envvar="SEEDBED_BASE_URL", help="OpenAI-compatible endpoint (default: the embedded llama.cpp server).")
@click.option("--model", envvar="SEEDBED_MODEL", help="Model name at the endpoint, or a local catalog model.")
@click.option("--api-key", envvar=["SEEDBED_API_KEY", "OPENAI_API_KEY"], help="API key for --base-url.")
@click.option("--fake", is_flag=True, help="Use the deterministic scripted LLM (offline checks).")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Jobs reuse the shared LLM cache.")
@INDEX_ROOT
@PROMPTS
@friendly
def serve(index_names: tuple[str, ...], host: str, port: int, api_key_file: Path | None, no_auth: bool, jobs_dir: Path,
          cors: tuple[str, ...], datasets: tuple[Path, ...], base_url: str | None, model: str | None, api_key: str | None,
          fake: bool, cache: bool, root: Path) -> None:
    """Serve search, grounded chat completions and synthesis jobs over HTTP (see /openapi.json)."""
    from engine.llm.endpoint import EndpointSettings

    endpoint = EndpointSettings(base_url=base_url, model=model, api_key=api_key, fake=fake)
    run_serve(index_names, root, host, port, api_key_file, no_auth, jobs_dir, cors, endpoint, cache and not fake,
              datasets)
