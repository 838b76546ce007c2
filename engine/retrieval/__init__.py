"""Retrieval, the first stage of `retrieve -> refine -> filter`: everything that starts from hits.

- `retrieve.py`: per-label queries -> hybrid candidates -> similarity band -> label assignment ->
  diverse picks, the passages SynthesizRR rewrites.
- `screen.py`: the optional yes/no LLM question asked of each pick before it reaches a prompt.
- `coverage.py`: from the retrieval report, whether the corpus holds enough text per label, and
  which strategy each label is routed to.
- `ground.py`: retrieval-grounded answers with citations, the use case behind `seedbed serve`'s
  chat endpoint.

They live in one package because each begins where the index's search ends (hits in, picks or
prompts out), and pipeline.py, rounds.py, the strategies and the HTTP API all reach retrieval
through it. Importing this package does no work.
"""
