#!/usr/bin/env python3
"""Browser test of lossd's Swagger UI, offline, in Debian's headless Chromium.

Starts lossd on a free loopback port with an API key, opens /docs with Playwright driving
/usr/bin/chromium (never a browser a tool downloads), enters the key with the Authorize
button (the page itself needs none), expands `mse_loss`, clicks "Try it out" and "Execute",
and asserts that the response shown is a 200 carrying the loss. Fails if the page asks for
anything but the server itself (the UI must work with no network). Saves a screenshot to
target/browser/swagger-mse_loss.png.

Usage: tests/browser/swagger_ui.py [path/to/lossd]   (default: target/release/lossd)
Needs: `pip install playwright` (the Python package only; no `playwright install`) and
Debian's `chromium` package.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"lossd exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    sys.exit("lossd did not become healthy")


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/lossd")
    shots = os.path.join(root, "target/browser")
    os.makedirs(shots, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = "k-browser-" + os.urandom(8).hex()
    env = dict(os.environ, LOSSD_API_KEYS=key)
    proc = subprocess.Popen([binary, "--addr", f"127.0.0.1:{port}", "--log", "warn"], env=env)
    try:
        wait_healthy(base, proc)
        try:
            urllib.request.urlopen(f"{base}/v1/losses", timeout=5)
            sys.exit("lossd answered /v1/losses without a key")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code
        foreign = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on(
                "request",
                lambda req: foreign.append(req.url)
                if urlparse(req.url).hostname not in ("127.0.0.1", None) and not req.url.startswith("data:")
                else None,
            )
            page.goto(f"{base}/docs/", wait_until="networkidle")
            # The document declares the bearer scheme: Swagger UI shows Authorize and takes the key.
            authorize = page.locator(".auth-wrapper .authorize")
            authorize.wait_for(timeout=20_000)
            authorize.click()
            dialog = page.locator(".dialog-ux .modal-ux")
            dialog.locator("input").first.fill(key)
            dialog.locator("button.modal-btn.authorize").click()
            # Authorized: the dialog offers to log out, then closes.
            dialog.locator("button.modal-btn.auth:not(.authorize)").first.wait_for(timeout=5_000)
            dialog.locator("button.btn-done").click()
            op = page.locator("#operations-regression-mse_loss")
            op.wait_for(timeout=20_000)
            op.locator(".opblock-summary").first.click()
            op.get_by_role("button", name="Try it out").click()
            op.get_by_role("button", name="Execute").click()
            status = op.locator(".live-responses-table tbody .response-col_status").first
            status.wait_for(timeout=20_000)
            code = status.inner_text().strip()
            body_text = op.locator(".live-responses-table tbody .response-col_description pre").first.inner_text()
            shot = os.path.join(shots, "swagger-mse_loss.png")
            page.screenshot(path=shot, full_page=False)
            op.screenshot(path=os.path.join(shots, "swagger-mse_loss-operation.png"))
            browser.close()
        assert code == "200", f"status shown: {code}"
        shown = json.loads(body_text)
        assert "loss" in shown and isinstance(shown["loss"], float), f"no loss in the response shown: {body_text}"
        assert shown["dtype"] == "float64" and shown["shape"] == [], body_text
        assert "grad" in shown, "the first example asks for the gradient"
        assert not foreign, f"the UI asked for other hosts: {foreign}"
        print(f"ok: Swagger UI took the API key, executed mse_loss and showed loss = {shown['loss']}; screenshot {shot}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
