"""A private X server (Xvfb) for the Tk tests, the benchmark and the screenshots.

Xvfb picks a free display number itself and writes it to a pipe once it
accepts connections (``-displayfd``), so there is no port guessing and no
waiting by sleep.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

__all__ = ["Xvfb", "XvfbUnavailable"]


class XvfbUnavailable(RuntimeError):
    """Xvfb is not installed or did not come up."""


class Xvfb:
    """``with Xvfb() as display:`` runs an X server and sets ``DISPLAY``.

    :param fbdir: a directory where Xvfb keeps its screen as an XWD file
        (``Xvfb_screen0``), for screenshots.
    """

    def __init__(self, size: str = "1280x800x24", fbdir: str | None = None, timeout: float = 10.0) -> None:
        self.size = size
        self.fbdir = fbdir
        self.timeout = timeout
        self.display = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._saved_display: str | None = None

    def start(self) -> str:
        binary = shutil.which("Xvfb")
        if binary is None:
            raise XvfbUnavailable("Xvfb is not installed (Debian: apt-get install xvfb)")
        read_end, write_end = os.pipe()
        command = [binary, "-displayfd", str(write_end), "-screen", "0", self.size, "-nolisten", "tcp", "-noreset"]
        if self.fbdir is not None:
            command += ["-fbdir", self.fbdir]
        # Xvfb's messages go to a file: a pipe nobody reads could fill and block it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the server; closed by stop())
        try:
            self._process = subprocess.Popen(command, pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=self._log)
        finally:
            os.close(write_end)
        try:
            number = self._read_display_number(read_end)
        finally:
            os.close(read_end)
        self.display = f":{number}"
        self._saved_display = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = self.display
        return self.display

    def _read_display_number(self, read_end: int) -> str:
        deadline = time.monotonic() + self.timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                self.stop()
                raise XvfbUnavailable(f"Xvfb did not report a display within {self.timeout}s")
            chunk = os.read(read_end, 64)
            if not chunk:  # Xvfb exited before it was ready
                self._log.seek(0)
                error = self._log.read().decode(errors="replace")
                self.stop()
                raise XvfbUnavailable(f"Xvfb failed to start: {error.strip()[-500:]}")
            data += chunk
        return data.decode().strip()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._log.close()
        if self.display:
            if self._saved_display is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = self._saved_display
            self.display = ""

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
