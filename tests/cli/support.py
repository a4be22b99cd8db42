"""Running ``nbllm`` as a user does: a subprocess, a pseudo-terminal, a foreground ``nbllm serve``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pexpect

from nbllm.client import Client

PROMPT = "Send a message (/? for help)"  # the placeholder of an empty >>> prompt


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without NBLLM_*/OLLAMA_*, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update(extra or {})
    return env


def nbllm(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nbllm ARGS`` with pipes (not a terminal) and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "nbllm", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        input=stdin if stdin is not None else "",
        timeout=timeout,
    )


def spawn(*args: str, env: dict[str, str], columns: int = 80) -> pexpect.spawn:
    """``nbllm ARGS`` on a pseudo-terminal, to be driven with pexpect."""
    full = clean_env(env)
    # pexpect does not answer the terminal's cursor-position requests; without this prompt_toolkit
    # waits a second for each answer (a real terminal answers at once).
    full.update(PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "nbllm", *args],
        env=full,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, columns),
    )
    return child


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """``nbllm serve`` in the foreground of a child process, with its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nbllm", "serve"],
            env=clean_env(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://{env['OLLAMA_HOST']}"

    def wait_ready(self, timeout: float = 60) -> ServeProcess:
        """Wait until the server answers ``HEAD /``."""
        deadline = time.monotonic() + timeout
        with Client(self.url) as client:
            while time.monotonic() < deadline:
                if client.heartbeat():
                    return self
                if self.proc.poll() is not None:
                    raise AssertionError(f"nbllm serve exited with {self.proc.returncode}:\n{self.log()}")
                time.sleep(0.1)
        raise AssertionError(f"nbllm serve did not answer within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def log(self) -> str:
        """What the server wrote so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()
