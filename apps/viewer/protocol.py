"""A minimal client of viser's websocket protocol (and the headless browser flags): it sends hand-made messages (a camera, a
GUI value, or raw bytes) and discards what the server sends. The viewer benchmark drives the
server with it, and the tests use it to send what a browser would and what a hostile one might.
"""

from __future__ import annotations

import math
import shutil
import threading

# Debian's chromium with software WebGL (what a headless machine has), for the browser tests and
# the time-to-first-frame benchmark; playwright drives it and never downloads a browser.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


class RawClient:
    """Connects to a viser server; reads and discards everything it is sent (so the server
    never blocks on it), counting the messages."""

    def __init__(self, port: int) -> None:
        import viser
        from websockets.sync.client import connect

        self.ws = connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
        self.closed = threading.Event()
        self.received = 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        try:
            while True:
                self.ws.recv()
                self.received += 1
        except Exception:
            self.closed.set()

    def send(self, message: dict | bytes) -> None:
        import msgspec

        self.ws.send(message if isinstance(message, bytes) else msgspec.msgpack.encode(message))

    def camera(self, wxyz, position, fov: float = math.radians(50), width=640, height=480) -> None:
        self.send({"type": "ViewerCameraMessage", "wxyz": [float(v) for v in wxyz],
                   "position": [float(v) for v in position], "fov": float(fov),
                   "near": 0.01, "far": 1000.0, "image_height": height, "image_width": width, "look_at": [0.0, 0.0, 0.0],
                   "up_direction": [0.0, 0.0, 1.0]})  # fmt: skip

    def gui(self, handle, value) -> None:
        self.send({"type": "GuiUpdateMessage", "uuid": handle._impl.uuid, "updates": {"value": value}})

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
