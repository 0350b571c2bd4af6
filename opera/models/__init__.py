"""Models: loading and encoding (encoders), what a checkpoint says about itself (st_checkpoint),
the autocast every stage runs under (precision), tiny stand-ins for tests (tiny_models), and finished
runs as model folders with cards (publish)."""
