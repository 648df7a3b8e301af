"""The n-gram engine (DESIGN.md §3–§5). It works on token arrays only: no file formats, no HTTP.

- tokens.py      tokens, PAD and the token grids a table is built from
- windows.py     causal γ-windows over token grids, vectorized, and their 64-bit keys
- migrations.py  the forward-only SQL migration runner of the store
- store.py       the DuckDB store: connections, the table catalogue, reading tables
- counting.py    counting a chunk of grids into its histogram, compiled
- merge.py       merging the chunks' counts through files, a range of keys at a time
- build.py       building a γ table atomically from them
- index.py       a table as sorted arrays for batched lookups (the sampler's cache of DuckDB)
- index_files.py those arrays saved beside the store, mapped read-only by every process
- histograms.py  a table's histograms as arrays, for the γ-ARVM and the likelihood figures
- samples.py     the sampling request and result shared by every mode, counter-based randomness
- exact.py       exact depth-first search with forward checking and backjumping
- depth_first.py its loop, compiled with numba (context keys, hash tables, the search itself)
- prefetch.py    a cache prefetch for compiled code, so that a thread's searches overlap misses
- constraints.py which positions of a grid constrain which, for the search
- modes.py       the Sampler: exact, backoff, hybrid and neural over tables and γ-ARVMs
"""
