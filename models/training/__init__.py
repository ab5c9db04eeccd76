"""Training the network: the synthetic training cache and dataset, augmentations, losses
(``train.py`` at the repository root runs them)."""
