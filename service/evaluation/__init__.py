"""How close samples come to training images, and how good they are (DESIGN.md §7).

- pixels.py           exact nearest images by pixel error (PSNR), one matrix product per block
- hamming.py          exact nearest latents by Hamming distance over packed bits
- nearest.py          both searches over a run's training split, with the memorization flags
- reconstructions.py  the BL-AE's reconstructions of the training images, cached in the run
- frechet.py          the Fréchet distance between two feature sets
- features.py         classifier and Inception features for it
- report.py           the memorization report: rates per γ and mode beside a held-out baseline
- plots.py            the report's and the training curve's PNG plots
"""
