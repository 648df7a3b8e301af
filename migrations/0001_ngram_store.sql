-- 0001: the n-gram store (DESIGN.md §4): a catalogue of built tables and their histogram rows.
--
-- One row of `ngrams` per (table, context, token) seen in training: the histogram q(token | context)
-- of the paper's eq. 9, plus provenance (how many distinct training images hold the window, and one
-- of them). A table is visible to readers only while its catalogue row says state = 'ready'.
--
-- DuckDB notes: no PRIMARY KEY or index on `ngrams`, because an ART index would cost more to
-- build than the GROUP BY itself; rows of one table are inserted together, so the zone maps on
-- table_id make `WHERE table_id = ?` read only that table's row groups.

CREATE TABLE ngram_tables (
    table_id        BIGINT PRIMARY KEY,
    name            VARCHAR NOT NULL,    -- 'g5', or 'g5p' for a positional table
    gamma           INTEGER NOT NULL,    -- odd window size ≥ 3
    by_position     BOOLEAN NOT NULL,    -- (y, x) is part of the context key ("positional" is a
                                         -- DuckDB keyword)
    state           VARCHAR NOT NULL,    -- 'building' (a staging table) or 'ready'
    run             VARCHAR NOT NULL,    -- run directory the latents came from
    model_sha256    VARCHAR NOT NULL,    -- BL-AE that encoded the latents
    latent_channels INTEGER NOT NULL,    -- C: tokens are 0 … 2^C − 1, PAD = 2^C
    grid_height     INTEGER NOT NULL,
    grid_width      INTEGER NOT NULL,
    windows         BIGINT,              -- training windows counted
    contexts        BIGINT,              -- distinct contexts
    rows            BIGINT,              -- distinct (context, token) pairs
    images          BIGINT,              -- training images read
    build_seconds   DOUBLE,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE ngrams (
    table_id      BIGINT NOT NULL,   -- ngram_tables.table_id
    context_key   BIGINT NOT NULL,   -- 64-bit hash of the context (and position), see windows.py
    context       BLOB NOT NULL,     -- the context tokens, little-endian uint32 each
    position      INTEGER,           -- raster position y·W + x for positional tables, else NULL
    token         INTEGER NOT NULL,  -- next token
    count         BIGINT NOT NULL,   -- windows with this context followed by this token
    images        BIGINT NOT NULL,   -- distinct training images holding this window
    example_image BIGINT NOT NULL    -- one of them (the smallest id)
);

CREATE SEQUENCE ngram_table_ids START 1;
