"""``mirnet serve`` end to end in a real headless Chromium: pick a photo, get it enhanced,
compare, download.

The server runs a nano model whose output is exactly ``input + BOOST`` (see
:func:`brightening_weights`), so "the result is brighter" is a property of the model, not
luck of an untrained network's random weights; the test checks the downloaded PNG pixel by
pixel against it.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (skips without them). The
screenshot is saved in the test's temporary folder; set ``MIRNET_SERVE_SCREENSHOT=PATH`` to
keep a copy. (The README's screenshot, with the real bundled model, comes from
``scripts/serve_screenshot.py``.)
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mirnet.archs import MIRNet
from mirnet.weights import arch_config, save_weights
from tests.conftest import darken, smooth_image

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "no headless browser installed (apt-get install chromium chromium-driver)", allow_module_level=True
    )

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1000,920",
]
BOOST = 0.25  # what the test model adds to every pixel
SCREENSHOT = os.environ.get("MIRNET_SERVE_SCREENSHOT")
# The docs screenshot shows a real darkened photo; the test otherwise makes its own.
SAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "samples" / "chelsea_dark.png"
TIMEOUT_S = 20

# The page's images as the user sees them: mean of the decoded pixels via a canvas.
MEAN_BRIGHTNESS_JS = """
const canvas = document.createElement("canvas");
const image = document.getElementById(arguments[0]);
canvas.width = image.naturalWidth;
canvas.height = image.naturalHeight;
const context = canvas.getContext("2d");
context.drawImage(image, 0, 0);
const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
let sum = 0;
for (let i = 0; i < pixels.length; i += 4) sum += pixels[i] + pixels[i + 1] + pixels[i + 2];
return sum / (pixels.length / 4 * 3);
"""


def brightening_weights(path: Path) -> Path:
    """A nano model whose output is ``clip(input + BOOST)``, saved as a weights file.

    MIRNet ends with ``conv_out(features) + input`` (a global residual): with ``conv_out``'s
    weights zeroed and its bias set to BOOST, every output pixel is its input plus BOOST.
    The rest of the network still runs, so the app does real loading and inference.
    """
    arch = arch_config("nano", bias=True)
    model = MIRNet(**arch)
    with torch.no_grad():
        model.conv_out.weight.zero_()
        model.conv_out.bias.fill_(BOOST)
    return save_weights(path, model, "nano", arch)


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """The app on 127.0.0.1 on a free port, served by uvicorn in a background thread."""
    import uvicorn

    from mirnet.serve import create_app

    # fp32: the test checks every pixel of a known function (bf16 would round it).
    app = create_app(model=str(brightening_weights(tmp_path / "brighten.safetensors")), precision="fp32")
    # Binding port 0 here and handing the socket over leaves no race for the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=TIMEOUT_S)
        sock.close()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Headless Chromium driven by the system chromedriver; never downloads a browser."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try the network
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_state(driver, *states: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    body = driver.find_element("tag name", "body")
    WebDriverWait(driver, TIMEOUT_S).until(lambda _: body.get_attribute("data-state") in states)
    return body.get_attribute("data-state")


def test_enhance_a_photo_in_the_browser(server_url: str, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if SCREENSHOT and SAMPLE_PHOTO.is_file():
        dark = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB"))
    else:
        dark = darken(smooth_image(7, 300, 450), factor=0.25)
    photo = tmp_path / "dark_photo.png"
    Image.fromarray(dark).save(photo)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not pixels\n")

    browser.get(server_url)
    WebDriverWait(browser, TIMEOUT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    assert browser.find_element(By.ID, "model").get_attribute("value") == "brighten"
    assert "megapixels" in browser.find_element(By.ID, "limits").text

    # A bad upload: the server's message is shown, nothing else happens.
    browser.find_element(By.ID, "file").send_keys(str(not_an_image))
    assert wait_for_state(browser, "done", "error") == "error"
    assert "not an image" in browser.find_element(By.ID, "status").text

    browser.find_element(By.ID, "file").send_keys(str(photo))
    state = wait_for_state(browser, "done", "error")
    assert state == "done", browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "result").is_displayed()

    # The page shows a brighter result than the original.
    before = browser.execute_script(MEAN_BRIGHTNESS_JS, "before")
    after = browser.execute_script(MEAN_BRIGHTNESS_JS, "after")
    assert after > before + 0.9 * BOOST * 255, (before, after)

    # Download: a PNG of the same size with exactly input + BOOST in every pixel.
    browser.find_element(By.ID, "download").click()
    saved = tmp_path / "downloads" / "dark_photo_enhanced.png"
    WebDriverWait(browser, TIMEOUT_S).until(lambda _: saved.is_file())
    with Image.open(saved) as image:
        assert image.format == "PNG"
        result = np.asarray(image.convert("RGB")).astype(int)
    expected = np.clip(dark.astype(int) + round(BOOST * 255), 0, 255)
    assert result.shape == dark.shape
    assert np.abs(result - expected).max() <= 1

    # The before/after slider follows the keyboard (and so the mouse: same input element).
    slider = browser.find_element(By.ID, "slider")
    split = "return getComputedStyle(document.getElementById('compare')).getPropertyValue('--split').trim()"
    slider.send_keys(Keys.HOME)
    assert browser.execute_script(split) == "0%"
    slider.send_keys(Keys.END)
    assert browser.execute_script(split) == "100%"
    browser.execute_script("arguments[0].value = 50; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert browser.execute_script(split) == "50%"

    # Offline and clean: no script errors, no blocked (external) loads. The one expected
    # error is the 415 of the bad upload above.
    problems = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "415" not in entry["message"]
    ]
    assert not problems, problems

    browser.save_screenshot(str(tmp_path / "serve.png"))
    if SCREENSHOT:
        shutil.copyfile(tmp_path / "serve.png", SCREENSHOT)
