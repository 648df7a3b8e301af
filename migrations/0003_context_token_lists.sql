-- 0003: a context's tokens as a list of integers, no longer a blob of little-endian uint32s.
--
-- DuckDB writes and reads a list of integers about twice as fast as a blob of the same tokens
-- (the blob's per-value string handling dominated the build's insert of its contexts), and a
-- list can be read in SQL (`context[1]` is the first token) where a blob could not.

CREATE TABLE ngram_contexts_0003 (
    table_id    BIGINT NOT NULL,      -- ngram_tables.table_id
    context_key BIGINT NOT NULL,      -- as in ngrams
    position    INTEGER,              -- raster position y·W + x for positional tables, else NULL
    context     UINTEGER[] NOT NULL   -- the context tokens in windows.py's slot order, PAD = 2^C
);

-- Each 4-byte group of the blob, hex digits read least significant byte first.
INSERT INTO ngram_contexts_0003
SELECT table_id, context_key, position,
       list_transform(
           range(octet_length(context) // 4),
           lambda i: ('0x' || substr(hex(context), 8 * i + 7, 2) || substr(hex(context), 8 * i + 5, 2)
                      || substr(hex(context), 8 * i + 3, 2) || substr(hex(context), 8 * i + 1, 2)
                     )::UINTEGER
       )
FROM ngram_contexts
ORDER BY table_id, context_key;

DROP TABLE ngram_contexts;
ALTER TABLE ngram_contexts_0003 RENAME TO ngram_contexts;
