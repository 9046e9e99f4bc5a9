"""The DKL model (feature extractor + GP), its fitting and background training, pre-training and transfer."""
