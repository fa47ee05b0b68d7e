"""One frame when asked: a camera (OpenCV, or Picamera2 on a Raspberry Pi), or a stand-in for one.

Nothing here watches continuously: a frame is taken when a user or the model asks for one, and the
camera is opened only for as long as the caller holds it. Sources, by what `open_camera` is given:
- "0", "1", ... or /dev/videoN: a camera through OpenCV (V4L2 on Linux);
- "picamera2": the Pi's camera module through Picamera2 (Raspberry Pi OS's python3-picamera2);
- a video file: the next frame at each capture (tests, replaying a recording);
- a folder of images: the next image (sorted by name) at each capture, then the first again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge.errors import ImageError
from edge.vision.images import FORMATS, Picture, picture_from_rgb, read_image

# A camera's first frames come before its exposure settles (dark or washed out): drop a few.
SETTLE_FRAMES = 5
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


class FrameSource:
    """What the voice loop and `ask --camera` take frames from."""

    name = "camera"

    def capture(self) -> Picture:
        raise NotImplementedError

    def close(self) -> None:
        pass


class OpenCVSource(FrameSource):
    def __init__(self, spec: str | int, *, live: bool):
        cv2 = _cv2()
        self.name, self._live = str(spec), live
        self._cap = cv2.VideoCapture(spec)
        if not self._cap.isOpened():
            self._cap.release()
            what = "camera" if live else "video file"
            raise ImageError(f"cannot open the {what} {spec}: check it is connected (or the path), and not in use")
        self._settled = not live

    def capture(self) -> Picture:
        if not self._settled:
            for _ in range(SETTLE_FRAMES):
                self._cap.grab()
            self._settled = True
        ok, frame = self._cap.read()
        if not ok and not self._live:  # a recording at its end: start it again
            self._cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            raise ImageError(f"{self.name} gave no frame: check the camera is still connected")
        return picture_from_rgb(np.ascontiguousarray(frame[:, :, ::-1]), name=self.name)  # OpenCV is BGR

    def close(self) -> None:
        self._cap.release()


class FolderSource(FrameSource):
    def __init__(self, folder: Path):
        self.name = str(folder)
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise ImageError(f"{folder} holds no images ({', '.join(FORMATS)}): put frames in it, or name a camera")
        self._next = 0

    def capture(self) -> Picture:
        path = self._files[self._next % len(self._files)]
        self._next += 1
        return read_image(path)


class Picamera2Source(FrameSource):
    name = "picamera2"

    def __init__(self):
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise ImageError(
                "Picamera2 is not installed: on Raspberry Pi OS `sudo apt install python3-picamera2` and make the "
                "venv with --system-site-packages, or use --camera 0 for a USB camera"
            ) from None
        try:
            self._camera = Picamera2()
            self._camera.configure(self._camera.create_still_configuration(main={"format": "RGB888"}))
            self._camera.start()
        except Exception as exc:  # noqa: BLE001  (libcamera raises many kinds; all mean "no camera")
            raise ImageError(
                f"the Pi camera did not start ({exc}); check the ribbon cable and `rpicam-hello`"
            ) from None

    def capture(self) -> Picture:
        # Picamera2's "RGB888" is laid out B, G, R in memory (libcamera's naming): reverse it.
        return picture_from_rgb(np.ascontiguousarray(self._camera.capture_array()[:, :, ::-1]), name=self.name)

    def close(self) -> None:
        self._camera.close()


@contextlib.contextmanager
def open_camera(spec: str) -> Iterator[FrameSource]:
    """The frame source `spec` names (see the module's docstring), closed on leaving."""
    source = _source(spec.strip())
    try:
        yield source
    finally:
        source.close()


def _source(spec: str) -> FrameSource:
    if spec == "picamera2":
        return Picamera2Source()
    if spec.isdigit():
        return OpenCVSource(int(spec), live=True)
    path = Path(spec)
    if spec.startswith("/dev/video"):
        return OpenCVSource(spec, live=True)
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return OpenCVSource(spec, live=False)
    raise ImageError(
        f"no camera {spec!r}: give an index (0), /dev/videoN, picamera2, a video file or a folder of images"
    )


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImageError("OpenCV is not installed: pip install 'edge-gemma[camera]' (or use --image FILE)") from None
    return cv2
