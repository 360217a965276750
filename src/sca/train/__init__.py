"""Training: a Trainer subclass using only public hooks, and the Hydra-configured `sca train` runner."""
