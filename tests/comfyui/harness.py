"""A real ComfyUI server for the opt-in suite, its HTTP/websocket API, and the real frontend's converter.

The server runs from the checkout COMFYUI_DIR names, with `--base-directory` pointing at a temporary
folder (models, custom_nodes, input, output, user), so the checkout itself is never written to.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("THINKDIFF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


PACK_FOLDER = "ComfyUI-ThinkDiff"
"""The folder name the suite links the pack in under custom_nodes/ (what users clone it as)."""

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComfyServer:
    """`python main.py --cpu --listen 127.0.0.1 ...` as a child process, with a small JSON client (`cpu=False` and
    `extra_args` for a GPU run, as bench/comfy_cards.py makes)."""

    def __init__(self, comfyui_dir: Path, base: Path, extra_paths: Path, python: str = sys.executable,
                 cpu: bool = True, extra_args: tuple[str, ...] = (), environment: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.log_path = base / "server.log"
        self.output_dir = base / "output"
        command = [
            python, "main.py", *(["--cpu"] if cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--base-directory", str(base), "--output-directory", str(self.output_dir),
            "--extra-model-paths-config", str(extra_paths), "--preview-method", "none", *extra_args,
        ]
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2",
                       **(environment or {})}
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=comfyui_dir, stdout=self._log, stderr=subprocess.STDOUT, env=environment)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}; log:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer /system_stats in {timeout} s; log:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Any:
        return json.loads(self.fetch(path)[1])

    def fetch(self, path: str) -> tuple[str, bytes]:
        """(content type, body) of a GET, for the static files the server serves."""
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.headers.get("Content-Type", ""), response.read()

    def post(self, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def queue(self, prompt: dict) -> str:
        status, answer = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200:
            raise AssertionError(f"POST /prompt answered {status}: {json.dumps(answer, indent=1)[:4000]}")
        return answer["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float = 600.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}; log:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


async def watch_prompt(server: ComfyServer, prompt: dict, handle: Callable[[str, dict, Any], Awaitable[bool]],
                       timeout: float = 300.0) -> str:
    """Queue `prompt` as a browser does (over a websocket client) and pass each of its events to
    `await handle(type, data, session)` until that returns True; `session` can post to the server meanwhile
    (/interrupt). Returns the prompt id."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url.replace('http', 'ws')}/ws?clientId={server.client_id}") as socket:
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": server.client_id}) as answer:
                assert answer.status == 200, await answer.text()
                prompt_id = (await answer.json())["prompt_id"]

            async def listen() -> None:
                async for message in socket:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    if data.get("prompt_id") in (None, prompt_id) and await handle(event["type"], data, session):
                        return

            await asyncio.wait_for(listen(), timeout)
    return prompt_id


def status_messages(entry: dict) -> dict[str, dict]:
    """A /history entry's status messages by event name (execution_start, execution_cached, ...)."""
    return {name: data for name, data in entry["status"]["messages"]}


@contextmanager
def chromium_page(url: str) -> Iterator[Any]:
    """The server's own page in headless Chromium (Debian's), driven by Playwright, with the app loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            yield page
        finally:
            browser.close()


def editor_to_api(page: Any, workflow: dict) -> dict:
    """What the frontend sends to POST /prompt for this editor-format workflow (`graphToPrompt().output`)."""
    return page.evaluate(
        """async (workflow) => {
            await window.app.loadGraphData(structuredClone(workflow), true, false);
            const converted = await window.app.graphToPrompt();
            return converted.output;
        }""",
        workflow,
    )
