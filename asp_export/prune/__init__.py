"""asp prune: GASL training, the other methods, targets, surgery, report."""
