"""Developer tools the Makefile runs: benchmark, screenshot and dashboard picture."""
