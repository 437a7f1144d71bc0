"""``./dev demo``: a small cluster of the example project on this machine."""
