"""Images ↔ binary latents (DESIGN.md §1–§2): the BL-AE applied in batches, and the latents as
packed bytes and text.

- bits.py        packing latents into bytes (as latents.parquet stores them) and into text
- latent_set.py  the packed latents of a set of images, with ids, splits and labels
- codec.py       batched encode (images → bits) and decode (bits → images) through a BL-AE
"""
