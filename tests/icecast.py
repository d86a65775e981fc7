"""Debian's icecast2 and ffmpeg for the station-stream tests (a helper, not a test module)."""

from __future__ import annotations

import base64
import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, wait_until

__all__ = [
    "ADMIN_PASSWORD",
    "FFMPEG",
    "ICECAST",
    "MOUNT",
    "SOURCE_PASSWORD",
    "SYNTH_RATE",
    "TONE_HZ",
    "Icecast",
    "needs_ffmpeg",
    "needs_icecast",
]

FFMPEG = shutil.which("ffmpeg")
ICECAST = shutil.which("icecast2") or shutil.which("icecast")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="needs Debian's ffmpeg (apt-get install ffmpeg)"
)
needs_icecast = pytest.mark.skipif(
    ICECAST is None or FFMPEG is None,
    reason="needs Debian's icecast2 and ffmpeg (apt-get install icecast2 ffmpeg)",
)

TONE_HZ = 440.0
SYNTH_RATE = 44_100
SOURCE_PASSWORD = "source-pw"
ADMIN_PASSWORD = "admin-pw"
MOUNT = "/live.mp3"


class Icecast:
    """Debian's icecast2 on a free loopback port with a generated config.

    Icecast refuses to run as root unless ``<changeowner>`` names a user to switch
    to: as root the config makes it ``nobody`` (whose group is looked up), and its
    folder is made world-writable for the logs; as another user no switch is needed.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tagstream-icecast-"))
        security = ""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            group = grp.getgrgid(nobody.pw_gid).gr_name
            security = (
                "<security><chroot>0</chroot><changeowner>"
                f"<user>nobody</user><group>{group}</group></changeowner></security>"
            )
            self.root.chmod(0o777)
        config = f"""<icecast>
  <limits><clients>20</clients><sources>4</sources><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>65536</burst-size></limits>
  <authentication><source-password>{SOURCE_PASSWORD}</source-password>
    <admin-user>admin</admin-user><admin-password>{ADMIN_PASSWORD}</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{self.port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><logdir>{self.root}</logdir><pidfile>{self.root}/icecast.pid</pidfile>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog>
    <loglevel>3</loglevel></logging>
  {security}
</icecast>
"""
        self.config = self.root / "icecast.xml"
        self.config.write_text(config)
        self.config.chmod(0o644)
        assert ICECAST is not None
        self.process = subprocess.Popen(
            [ICECAST, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.source: subprocess.Popen[bytes] | None = None
        wait_until(self._answers, timeout_s=30, what=self._log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{MOUNT}"

    def _log(self) -> str:
        error_log = self.root / "error.log"
        text = error_log.read_text(errors="replace")[-2000:] if error_log.exists() else ""
        return f"icecast exit={self.process.poll()} error.log tail: {text}"

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            pytest.fail(f"icecast2 exited with {self.process.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except OSError:
            return False

    def mount_is_up(self, mount: str = MOUNT) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}{mount}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.HTTPError, OSError):
            return False

    def start_source(
        self,
        wav: Path,
        *,
        mount: str = MOUNT,
        codec: tuple[str, ...] = ("-c:a", "libmp3lame", "-b:a", "128k"),
        content_type: str = "audio/mpeg",
        muxer: str = "mp3",
    ) -> None:
        """FFmpeg as the source client: the wav looped for ever, 128 kbit/s mp3 by default,
        in real time; returns once the mount is up."""
        assert FFMPEG is not None
        self.source = subprocess.Popen(
            [
                FFMPEG,
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                str(wav),
                *codec,
                "-content_type",
                content_type,
                "-f",
                muxer,
                f"icecast://source:{SOURCE_PASSWORD}@127.0.0.1:{self.port}{mount}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.mount_is_up(mount), timeout_s=30, what=self._log)

    def kill_source(self) -> None:
        if self.source is not None:
            self.source.send_signal(signal.SIGKILL)
            self.source.wait()
            self.source = None

    def set_title(self, title: str) -> None:
        """Icecast's admin metadata endpoint, as a station's playout system calls it."""
        query = urllib.parse.urlencode({"mount": MOUNT, "mode": "updinfo", "song": title})
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/admin/metadata?{query}",
            headers={
                "Authorization": "Basic "
                + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
        assert "<return>1</return>" in body, body

    def close(self) -> None:
        self.kill_source()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)
