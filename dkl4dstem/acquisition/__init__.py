"""Where to measure next: EI / UCB / uncertainty on the posterior, and the mapping design."""
