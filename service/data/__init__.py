"""Images in and out (DESIGN.md §1): data sets, image files, and the run's Parquet files.

- sources.py  Fashion-MNIST, IDX, CIFAR-10 and image folders as one ImageSet; the DataSpec a run
              records
- images.py   uint8 arrays ↔ PNG bytes and files, image grids, uploads checked for the BL-AE
- parquet.py  images.parquet and latents.parquet, readable by pandas, polars and DuckDB
- latent_batches.py  latents.parquet a batch of whole images at a time, for builds
"""
