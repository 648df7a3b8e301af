"""latentgram: everything except the PyTorch models (those are in models/).

The stages of a run, in the order data flows through them:

    data/        images in: data sets, image files, images.parquet
      ↓
    training/    the BL-AE learns binary codes (loop in models/blae_train.py)
      ↓
    latents/     images → bits, batched; latents.parquet (data/parquet.py)
      ↓
    ngram/       DuckDB tables of context → next-token histograms per γ, their index, and the
                 samplers (exact search, backoff, hybrid, neural); training/arvm.py fits the
                 γ-ARVM to the same histograms
      ↓
    evaluation/  nearest training images, Fréchet distances, the memorization report

run/ ties the stages to a run directory, api/ serves a loaded run over HTTP and cli/ runs every
step from the command line; checkpoint.py, files.py, devices.py and errors.py serve them all.
"""
