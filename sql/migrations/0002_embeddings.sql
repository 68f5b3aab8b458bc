-- Embedding cache (issue 3): one float32 vector per (model, text). `model` is the Embedder's
-- cache key (model id + max length + backend), `text_hash` the sha1 of the exact text embedded,
-- so the same text in any dataset or field is embedded once, and adding rows embeds only new rows.
CREATE TABLE IF NOT EXISTS embedding_cache (
    model      VARCHAR NOT NULL,
    text_hash  VARCHAR NOT NULL,
    dim        INTEGER NOT NULL,
    vec        BLOB NOT NULL,               -- dim little-endian float32, L2-normalized
    PRIMARY KEY (model, text_hash)
);

-- Registry of FAISS indexes built on disk (the .json next to each .faiss file is authoritative).
CREATE TABLE IF NOT EXISTS vector_indexes (
    dataset      VARCHAR NOT NULL,
    field        VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,          -- flat | hnsw | ivfpq
    path         VARCHAR NOT NULL,          -- the .faiss file
    model        VARCHAR NOT NULL,
    dim          INTEGER NOT NULL,
    n_rows       BIGINT NOT NULL,
    fingerprint  VARCHAR NOT NULL,          -- dataset fingerprint the index was built from
    params       JSON,
    built_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, field, kind)
);
