"""A run directory (DESIGN.md §1) and the steps that fill it.

- paths.py   where each file of a run lives
- record.py  run.json: what was built from what
- models.py  the run's trained models, loaded from their checkpoints
- steps.py   encode, then sample, as the CLI and the API call them
- build.py   the build: latents → n-gram tables and their index files (no torch)
- spark_build.py  the table build on Apache Spark, from latents.parquet to Parquet the store imports
- loaded.py  a whole run held in memory, for the service and the report
"""
