"""The fine-tuned transformer student: a sentence encoder (MiniLM by default) with a linear
classification head, trained end to end on CPU, as the synthetic-data literature fine-tunes
DistilBERT.

Recipe (fixed, so every set is trained the same way): mean-pooled encoder output -> dropout 0.1 ->
linear head; cross-entropy; AdamW (weight decay 0.01), encoder lr 1e-4 (MiniLM is small; 5e-5,
the BERT-size rate, reached 0.68 where 1e-4 reached 0.73 on 48 AG News rows) and head lr 3e-3,
linear warm-up over the first 10 % of steps then linear decay; batch 16; inputs cut to 128 tokens;
4 epochs, or more for a small set so that it trains for at least 60 optimiser steps; gradient norm
clipped at 1. The weights are read from the local sentence-transformers
folder (safetensors), never from a hub. All CPU threads are used: unlike the scikit-learn students
one fit is seconds-to-minutes of dense matrix work.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = ["FinetuneConfig", "DEFAULT", "fit_finetuned"]


@dataclass(frozen=True)
class FinetuneConfig:
    """The training recipe; see the module docstring."""

    model: str = "all-MiniLM-L6-v2"
    epochs: int = 4
    min_steps: int = 60  # small sets train for more epochs: at least this many optimiser steps
    batch_size: int = 16
    max_length: int = 128
    encoder_lr: float = 1e-4
    head_lr: float = 3e-3
    warmup: float = 0.1
    dropout: float = 0.1


DEFAULT = FinetuneConfig()


def fit_finetuned(texts: Sequence[str], labels: Sequence[str], config: FinetuneConfig | None = None,
                  seed: int = 0) -> Callable[[Sequence[str]], list[str]]:
    """Fine-tune the encoder and a head on (texts, labels); returns predict(texts) -> labels."""
    import torch

    config = config or DEFAULT
    from engine.embed import _dimension, _model_dir

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.manual_seed(seed)
    classes = sorted(set(labels))
    targets = torch.tensor([classes.index(label) for label in labels])
    encoder = _encoder(_model_dir(config.model), config.max_length)
    head = torch.nn.Sequential(torch.nn.Dropout(config.dropout),
                               torch.nn.Linear(_dimension(encoder), len(classes)))
    per_epoch = math.ceil(len(texts) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / per_epoch))
    steps = epochs * per_epoch
    optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": config.encoder_lr},
                                   {"params": head.parameters(), "lr": config.head_lr}], weight_decay=0.01)
    warmup = max(1, int(config.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    generator = torch.Generator().manual_seed(seed)
    encoder.train()
    head.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(texts), generator=generator).split(config.batch_size):
            logits = head(_embed(encoder, [texts[i] for i in batch.tolist()]))
            loss = torch.nn.functional.cross_entropy(logits, targets[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*encoder.parameters(), *head.parameters()], 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    encoder.eval()
    head.eval()

    def predict(batch_texts: Sequence[str]) -> list[str]:
        out: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(batch_texts), 64):
                logits = head(_embed(encoder, list(batch_texts[start:start + 64])))
                out.extend(classes[i] for i in logits.argmax(dim=1).tolist())
        return out

    return predict


def _encoder(folder, max_length: int):
    from engine.embed import load_sentence_transformer

    encoder = load_sentence_transformer(folder)
    encoder.max_seq_length = max_length
    return encoder


def _embed(encoder, texts: list[str]):
    features = (getattr(encoder, "preprocess", None) or encoder.tokenize)(texts)
    return encoder(features)["sentence_embedding"]
