"""The reranker: a small cross-encoder over (query, product) pairs.

It reads the query and the product's own words together (attributes first, then the title), plus
the product's photo as one extra token: the photo's vector in the shared text-image space
(``image_shared``), projected to the transformer's width and placed right after ``[CLS]``.  A
product known only by its photo is still scored, by that token alone.

The transformer is the first ``layers`` layers of the text encoder (multilingual-e5-small), so it
starts from a model that already reads product text; ``prism train`` fine-tunes it on the
catalog's own products with hard negatives mined by the first-stage retriever
(:mod:`prism.training.rerank_fit`).  The word-embedding table (250k x 384) stays frozen and is not
saved with the trained weights: it is read from the text encoder's converted checkpoint.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import BertModel, PreTrainedTokenizerBase

log = structlog.get_logger(__name__)

WEIGHTS_FILE = "reranker.safetensors"
CONFIG_FILE = "reranker.json"
# Attributes whose values are identifiers, not words (H&M's product_code): they only cost tokens.
_SKIP_KEYS = frozenset({"product_code", "year"})


@dataclass(frozen=True)
class RerankerConfig:
    base: str = "e5-small"  # the text model whose first layers start the cross-encoder
    layers: int = 2
    max_tokens: int = 64  # whole pair, special tokens and the photo token included
    max_query_tokens: int = 16
    image_dim: int = 384  # the shared space (0: no photo token)
    # The first stage's rank enters the score as a learned prior, ``w * -log(1 + rank)``, and the
    # text head starts at zero: a fresh model reproduces the first stage's order and training
    # learns the correction, rather than having to relearn from a few hundred products everything
    # the first stage already knows.
    rank_prior: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RerankerConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known.setdefault("rank_prior", False)  # written before the prior existed
        return cls(**known)


def passage(title: str, attributes: Mapping[str, Any] | None) -> str:
    """The product as the reranker reads it: attribute values by name, then the title.

    Attributes come first because the pair is truncated at the end, and they name the product's
    type and colour plainly where a title may not ("Poodle")."""
    parts = []
    for key, value in (attributes or {}).items():
        if value is None or key in _SKIP_KEYS:
            continue
        text = str(value).strip()
        if text:
            parts.append(f"{key.replace('_', ' ')}: {text}")
    if title.strip():
        parts.append(title.strip())
    return "; ".join(parts)


class _Tokens:
    """Query and passage token ids, with an LRU of passages (the same products recur across queries)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: RerankerConfig, cache_size: int = 50_000) -> None:
        self._tok = tokenizer
        self.config = config
        cls_id, sep_id, pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        if not all(isinstance(i, int) for i in (cls_id, sep_id, pad_id)):
            raise ValueError("the reranker's tokenizer needs cls, sep and pad tokens")
        self.cls_id, self.sep_id, self.pad_id = int(cls_id), int(sep_id), int(pad_id)
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._cache_size = cache_size

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self._tok(text, add_special_tokens=False, truncation=True, max_length=self.config.max_tokens)[
            "input_ids"
        ]
        return ids

    def passage_ids(self, text: str) -> list[int]:
        got = self._cache.get(text)
        if got is None:
            got = self._ids(text)
            self._cache[text] = got
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        return got

    def batch(
        self, query: str | Sequence[str], passages: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``[CLS] <photo> query [SEP] passage [SEP]`` per pair, padded: ``(ids, mask)``.

        ``query`` is one text for every pair or one per pair."""
        queries = [query] * len(passages) if isinstance(query, str) else list(query)
        q_cache: dict[str, list[int]] = {}
        rows: list[list[int]] = []
        for q, p in zip(queries, passages, strict=True):
            if q not in q_cache:
                q_cache[q] = self._ids(q)[: self.config.max_query_tokens]
            head = [self.cls_id, self.pad_id, *q_cache[q], self.sep_id]  # pad_id: the photo token's slot
            room = max(0, self.config.max_tokens - len(head) - 1)
            rows.append([*head, *self.passage_ids(p)[:room], self.sep_id])
        width = max((len(r) for r in rows), default=2)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return ids, mask


def build_cross_encoder(bert: BertModel, config: RerankerConfig) -> nn.Module:
    """The scoring network around a (truncated) BERT: photo projection, a "no photo" embedding, a
    linear score on the mean-pooled pair and, with ``rank_prior``, the first stage's rank."""
    import torch
    from torch import nn

    hidden = int(bert.config.hidden_size)

    class CrossEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.image_proj = nn.Linear(max(config.image_dim, 1), hidden)
            self.no_image = nn.Parameter(torch.zeros(hidden))
            self.score = nn.Linear(hidden, 1)
            if config.rank_prior:
                nn.init.zeros_(self.score.weight)
                nn.init.zeros_(self.score.bias)
                self.prior_weight = nn.Parameter(torch.ones(()))

        def forward(
            self,
            ids: torch.Tensor,
            mask: torch.Tensor,
            image: torch.Tensor,
            has_image: torch.Tensor,
            rank: torch.Tensor | None = None,
        ) -> torch.Tensor:
            words = self.bert.embeddings.word_embeddings(ids)
            photo = torch.where(has_image[:, None], self.image_proj(image), self.no_image[None, :])
            embeds = torch.cat([words[:, :1], photo[:, None, :].to(words.dtype), words[:, 2:]], dim=1)
            hidden_states = self.bert(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            # mean over the pair's tokens: the base model was trained to mean-pool, its [CLS] says
            # little on its own (scores of a fresh head on [CLS] barely differ between products)
            m = mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
            scores: torch.Tensor = self.score(pooled).squeeze(-1)
            if config.rank_prior:
                ranks = rank if rank is not None else torch.zeros_like(scores)
                scores = scores - self.prior_weight * torch.log1p(ranks.to(scores.dtype))
            return scores

    return CrossEncoder()


def load_base(config: RerankerConfig, cache_dir: Path) -> tuple[BertModel, PreTrainedTokenizerBase]:
    """The first ``config.layers`` layers of the base text model, with its tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    if config.base != "e5-small":
        raise ValueError(f"unknown reranker base {config.base!r} (only 'e5-small')")
    from prism.models.e5_convert import ensure_e5_checkpoint

    folder = ensure_e5_checkpoint(Path(cache_dir))
    bert_config = BertConfig.from_pretrained(folder)
    if not 1 <= config.layers <= int(bert_config.num_hidden_layers):
        raise ValueError(f"layers must be in [1, {bert_config.num_hidden_layers}], got {config.layers}")
    full = BertModel.from_pretrained(folder, config=bert_config, add_pooling_layer=False)
    # keep the first layers; the rest are dropped before anything runs through them
    full.encoder.layer = full.encoder.layer[: config.layers]
    full.config.num_hidden_layers = config.layers
    full.pooler = None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return full, tokenizer


def new_cross_encoder(config: RerankerConfig, cache_dir: Path) -> tuple[nn.Module, _Tokens]:
    bert, tokenizer = load_base(config, cache_dir)
    bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return build_cross_encoder(bert, config), _Tokens(tokenizer, config)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything but the frozen word-embedding table (read from the base checkpoint on load)."""
    return {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("embeddings.word_embeddings.weight")
    }


def save_reranker(folder: Path, model: nn.Module, config: RerankerConfig, report: Mapping[str, Any]) -> dict[str, str]:
    """Write the weights and their config/report; returns {file: sha256}."""
    import hashlib

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(
        json.dumps({"config": config.to_json(), **dict(report)}, indent=2, ensure_ascii=False) + "\n"
    )
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in (WEIGHTS_FILE, CONFIG_FILE)}


class Reranker:
    """A loaded cross-encoder; ``score`` is thread-safe (calls are serialised: they share the cores)."""

    def __init__(self, model: nn.Module, tokens: _Tokens, config: RerankerConfig, report: Mapping[str, Any]) -> None:
        self._model = model
        self._tokens = tokens
        self.config = config
        self.report = dict(report)
        self._lock = threading.Lock()
        # running estimate of the cost of one pair, for the latency budget (refined by every call)
        self.ms_per_pair = 1.0
        self.ms_fixed = 2.0

    @property
    def enabled_by_default(self) -> bool:
        return bool(self.report.get("enabled_by_default", False))

    def serves_language(self, language: str) -> bool:
        """Whether ``auto`` reranks queries in ``language`` ("en", "zh", "mixed", "none"): those of
        the validated queries (``report["languages"]``; all for a report that names none)."""
        languages = self.report.get("languages")
        return languages is None or language in languages

    def estimate_ms(self, pairs: int) -> float:
        return self.ms_fixed + self.ms_per_pair * pairs

    def score(
        self,
        query: str | Sequence[str],
        passages: Sequence[str],
        images: npt.NDArray[np.float32] | None = None,
        has_image: npt.NDArray[np.bool_] | None = None,
        ranks: npt.NDArray[np.float32] | None = None,
    ) -> npt.NDArray[np.float32]:
        """One score per passage (higher is better). ``images``: ``(n, image_dim)`` shared-space
        photo vectors with ``has_image`` saying which rows are real; ``ranks``: each passage's
        place in the first stage's ranking (0 = first; default: the order given)."""
        import torch

        n = len(passages)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        dim = max(self.config.image_dim, 1)
        img = images if images is not None else np.zeros((n, dim), dtype=np.float32)
        present = has_image if has_image is not None else np.zeros(n, dtype=bool)
        places = ranks if ranks is not None else np.arange(n, dtype=np.float32)
        t0 = time.perf_counter()
        with self._lock:
            ids, mask = self._tokens.batch(query, passages)
            with torch.inference_mode():
                out = self._model(
                    torch.from_numpy(ids),
                    torch.from_numpy(mask),
                    torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)),
                    torch.from_numpy(np.asarray(present, dtype=bool)),
                    torch.from_numpy(np.asarray(places, dtype=np.float32)),
                )
            scores: npt.NDArray[np.float32] = out.float().numpy().astype(np.float32)
        ms = (time.perf_counter() - t0) * 1000
        self.ms_per_pair = 0.8 * self.ms_per_pair + 0.2 * max(ms - self.ms_fixed, 0.0) / n
        return scores


def load_reranker(models_dir: Path, cache_dir: Path) -> Reranker | None:
    """The trained reranker of the models folder's current version, or None when it has none."""
    from safetensors.torch import load_file

    from prism.training.heads import resolve_version

    folder = resolve_version(Path(models_dir))
    cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights.is_file():
        return None
    meta = json.loads(cfg_path.read_text())
    config = RerankerConfig.from_json(meta.get("config", {}))
    model, tokens = new_cross_encoder(config, cache_dir)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    stray = [k for k in missing if not k.endswith("embeddings.word_embeddings.weight")]
    if stray or unexpected:
        raise ValueError(f"reranker weights do not fit the model: missing {stray[:3]}, unexpected {unexpected[:3]}")
    model.eval()
    reranker = Reranker(model, tokens, config, meta)
    # warm-up: the first pass allocates; it also seeds the latency estimate with a real figure
    reranker.score(["warm up"] * 8, ["type: dress; colour: blue"] * 8)
    reranker.score(["warm up"] * 16, ["type: dress; colour: blue; a longer title for the warm-up pass"] * 16)
    log.info("reranker.loaded", folder=str(folder), layers=config.layers, ms_per_pair=round(reranker.ms_per_pair, 2))
    return reranker
