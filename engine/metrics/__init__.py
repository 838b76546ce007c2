"""Benchmark metrics for labelled text sets (ours or anyone's): lexical, entity, semantic and
human-likeness diversity, label fidelity and student accuracy, each with its human counterpart.

Submodules, each importable on its own (importing this package does no work):

| module | what |
|---|---|
| `data` | load Parquet/JSONL/CSV/TSV or a run folder with text and label columns; label-matched samples |
| `selfbleu` | exact, fast Self-BLEU (equal to nltk's sentence_bleu with method-1 smoothing) |
| `lexical` | distinct-n, compression ratio, vocabulary size, length, Self-BLEU-1..5 |
| `entities` | spaCy NER entity entropy per type, popularity bias |
| `semantic` | mean pairwise cosine (overall, per label), Vendi score, class separability, Fréchet distance |
| `human` | MAUVE from our embeddings, Fréchet distance, each against a label-matched human sample |
| `students` | student accuracy (embedding LR, TF-IDF LR; gold ceiling), label fidelity (oracle) |
| `bench` | run everything for one or more sets against a reference: the report dict |
| `report`, `html` | report.json, report.html (inline SVG plots), a terminal summary |
"""

__all__ = ["data", "selfbleu", "lexical", "entities", "semantic", "human", "students", "bench", "report", "html"]
