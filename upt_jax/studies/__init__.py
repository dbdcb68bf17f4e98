"""Multi-run studies built on training and evaluation: base models trained to a criterion, the
paper comparison."""
