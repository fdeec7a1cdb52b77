"""The browser viewer (viser): the server and its frames, the camera-path and training panels,
the sessions that `view` and `train` open, and the raw protocol client the tests and the bench use."""
