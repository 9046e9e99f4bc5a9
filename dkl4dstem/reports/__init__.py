"""What a run leaves behind: progress, summary.json, figures, maps.npz and results.emd."""
