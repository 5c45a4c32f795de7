"""`edge calibrate`: a facade calibration proposed from one still, corrected on a local web page, saved to YAML."""
