"""Training runs with progress bars, metrics and checkpoints; the loops themselves are in models/.

- autoencoder.py  the BL-AE of a run (train-ae), resumable epoch by epoch
- arvm.py         the γ-ARVM of a table (train-arvm)
- classifier.py   the classifier behind the report's Fréchet distance, trained once per data set
"""
