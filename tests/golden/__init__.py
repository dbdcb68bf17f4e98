"""The golden run (issue #19): six training regimes, 3 steps each, recorded bitwise (see `record`)."""
