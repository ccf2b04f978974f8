"""Take the README's screenshot of `mirnet serve` with the bundled default model.

    python scripts/serve_screenshot.py [--photo samples/chelsea_dark.png] [--out docs/serve.png]

Starts the server on a free local port, opens the page in headless Chromium (Debian's
`chromium` and `chromium-driver`), uploads the photo, waits for the result and saves a
screenshot. tests/test_serve_browser.py checks the same flow with a model whose output is known.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photo", type=Path, default=ROOT / "samples" / "chelsea_dark.png")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serve.png")
    parser.add_argument("--model", default=None, help="bundled model name or weights file")
    args = parser.parse_args()

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mirnet.serve import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model=args.model), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    profile = tempfile.mkdtemp(prefix="mirnet-chromium-")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1000,960",
    ]
    for flag in [*flags, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"http://127.0.0.1:{sock.getsockname()[1]}")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        driver.find_element(By.ID, "file").send_keys(str(args.photo.resolve()))
        body = driver.find_element(By.TAG_NAME, "body")
        WebDriverWait(driver, 120).until(lambda _: body.get_attribute("data-state") in ("done", "error"))
        if body.get_attribute("data-state") != "done":
            raise SystemExit(driver.find_element(By.ID, "status").text)
        time.sleep(0.5)  # let the result image paint
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
        server.should_exit = True
    print(args.out)


if __name__ == "__main__":
    main()
