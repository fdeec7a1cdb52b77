"""splatfield.scenes — trainable scenes, strategies and the training loop (Layer 2).

Nothing here yet: the Gaussian-splatting trainer is issue #3.
"""
