"""The web page and the API docs page in a real headless Chromium (Debian's, no download).

Screenshots go to test-artifacts/ (git-ignored): web-page.png (a search before any
autoencoder exists), web-catalogue.png, web-model.png, web-trained.png (a search after the
training) and web-docs.png.
"""

import base64
import re
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PRODUCTS = 10
EPOCHS = 6  # enough for the page to show an epoch or two of progress, few enough to be quick


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("install Debian's chromium and chromium-driver (see .ci/run)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def catalogue(service, sample_images):
    """One photo of each of the first products, under ids of this module's own."""
    chosen = {
        f"web-{product}": paths[0] for product, paths in list(sample_images.items())[:PRODUCTS]
    }
    body = service.add_images(list(chosen.values()), ids=list(chosen))
    assert service.wait(body["job_id"])["status"] == "done"
    return chosen


def wait(driver, condition, timeout=120, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message)


def by_testid(driver, name):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def column_done(name):
    selector = f'[data-testid="column-{name}"][data-status="done"]'
    return lambda d: d.find_elements(By.CSS_SELECTOR, selector)


def result_ids(driver, column):
    items = driver.find_elements(
        By.CSS_SELECTOR, f'[data-testid="column-{column}"] [data-testid="result"]'
    )
    return [item.get_attribute("data-id") for item in items]


def assert_only_own_resources(driver, base_url):
    """Everything the page loaded came from the gateway (nothing from the internet)."""
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(base_url) for u in urls), urls


def assert_no_console_errors(driver):
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def screenshot(driver, name):
    """A picture of the whole page, below the fold too (Chromium's DevTools protocol)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    (ARTIFACTS / name).write_bytes(base64.b64decode(shot["data"]))


def enter_api_key(driver, key):
    field = by_testid(driver, "api-key")
    field.clear()
    field.send_keys(key)  # stored in localStorage as it is typed
    assert driver.execute_script("return localStorage.getItem('imgsearch.apiKey')") == key


def upload(driver, path):
    by_testid(driver, "file-input").send_keys(str(path))


def test_search_by_upload_shows_each_method_side_by_side(service, catalogue, browser):
    query_id, query_path = next(iter(catalogue.items()))
    browser.get(f"{service.base_url}/")
    assert browser.title == "Image similarity search"
    upload(browser, query_path)

    wait(browser, column_done("vgg16"), message="the vgg16 column never finished")
    wait(browser, column_done("autoencoder"), message="the autoencoder column never finished")
    wait(browser, column_done("fused"))
    assert result_ids(browser, "vgg16")[0] == query_id
    assert len(result_ids(browser, "vgg16")) == min(10, len(catalogue))
    assert result_ids(browser, "fused")[0] == query_id
    # The fused column says which weights it used and how they were obtained.
    weights = by_testid(browser, "fusion-weights")
    assert weights.get_attribute("data-source") in ("fitted", "default")
    assert "weights vgg16" in weights.text and "FUSION_WEIGHTS" in weights.text
    first = browser.find_element(
        By.CSS_SELECTOR, '[data-testid="column-vgg16"] [data-testid="result"]'
    )
    assert "#1" in first.text and "1.0000" in first.text
    # A result reads as its label (no metadata label here: the file name); its id is a click away.
    label = first.find_element(By.CSS_SELECTOR, '[data-testid="label"]')
    image_id = label.find_element(By.CSS_SELECTOR, '[data-testid="image-id"]')
    assert query_path.name in label.text and not image_id.is_displayed()
    label.find_element(By.TAG_NAME, "summary").click()
    assert image_id.is_displayed() and image_id.text == query_id
    # No autoencoder model yet: the column says so plainly, with no results.
    notice = by_testid(browser, "notice-autoencoder")
    assert notice.get_attribute("data-reason") == "not_trained"
    assert "Not trained yet" in notice.text and "Model view" in notice.text
    assert result_ids(browser, "autoencoder") == []
    # The query photo is shown beside the results, and every thumbnail loaded.
    wait(
        browser,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        ),
        timeout=30,
        message="some images did not load",
    )
    assert by_testid(browser, "query-name").text == query_path.name
    assert "done" in by_testid(browser, "search-status-text").text
    assert_only_own_resources(browser, service.base_url)
    assert_no_console_errors(browser)
    screenshot(browser, "web-page.png")


def test_a_bad_file_gets_a_readable_message(service, catalogue, browser, tmp_path):
    browser.get(f"{service.base_url}/")
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    upload(browser, bad)
    message = wait(
        browser, lambda d: by_testid(d, "message").is_displayed() and by_testid(d, "message")
    )
    assert "not an image" in message.text.lower() or "decode" in message.text.lower()
    browser.get_log("browser")  # the 415 above is logged as a console error: expected here


def test_catalogue_view_pages_deletes_and_picks(service, catalogue, browser):
    browser.get(f"{service.base_url}/#catalogue")
    items = wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="catalogue-item"]'),
    )
    assert [i.get_attribute("data-id") for i in items] == list(catalogue)
    assert by_testid(browser, "count-catalogue").text == f"{len(catalogue)} images"
    assert by_testid(browser, "count-vgg16").text.startswith(f"{len(catalogue)} indexed")
    assert by_testid(browser, "count-autoencoder").text == "no model yet"
    assert by_testid(browser, "page-info").text == "Page 1 of 1"
    screenshot(browser, "web-catalogue.png")

    # Deleting needs the key: without it the page asks for it and deletes nothing.
    victim = list(catalogue)[-1]
    card = f'[data-testid="catalogue-item"][data-id="{victim}"]'
    browser.find_element(By.CSS_SELECTOR, f'{card} [data-testid="delete"]').click()
    assert "API key" in wait(browser, lambda d: by_testid(d, "message").text)
    enter_api_key(browser, service.api_key)
    browser.find_element(By.CSS_SELECTOR, f'{card} [data-testid="delete"]').click()
    wait(browser, expected_conditions.alert_is_present(), timeout=10).accept()
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, card), timeout=30)
    assert requests.get(f"{service.api}/images/{victim}", timeout=5).status_code == 404
    assert by_testid(browser, "count-catalogue").text == f"{len(catalogue) - 1} images"
    del catalogue[victim]

    # "Find similar" searches with a catalogue photo.
    picked = list(catalogue)[1]
    browser.find_element(
        By.CSS_SELECTOR,
        f'[data-testid="catalogue-item"][data-id="{picked}"] [data-testid="find-similar"]',
    ).click()
    wait(browser, lambda d: d.current_url.endswith("#search"))
    wait(browser, column_done("vgg16"))
    assert result_ids(browser, "vgg16")[0] == picked


def test_model_view_trains_shows_progress_and_activates(service, catalogue, browser):
    browser.get(f"{service.base_url}/#model")
    summary = wait(browser, lambda d: by_testid(d, "model-summary").text)
    assert "No autoencoder model yet" in summary
    enter_api_key(browser, service.api_key)
    by_testid(browser, "train-epochs").send_keys(str(EPOCHS))
    by_testid(browser, "train-button").click()

    # The job's progress shows while it runs, then the new version appears as active.
    wait(browser, lambda d: by_testid(d, "training").is_displayed(), timeout=10)
    seen = {}

    def finished(driver):
        phase = by_testid(driver, "training").get_attribute("data-phase")
        seen.setdefault(phase, by_testid(driver, "training-text").text)
        return driver.find_elements(By.CSS_SELECTOR, '[data-testid="version-row"]')

    rows = wait(browser, finished, timeout=400, message="no trained version appeared")
    # Epochs can outpace the page's polling (every 2 s); when one was seen, it read right.
    if "training" in seen:
        expected = rf"Epoch \d+ of at most {EPOCHS} · loss [\d.]+ · validation loss [\d.]+ · .+"
        assert re.fullmatch(expected, seen["training"]), seen
    assert by_testid(browser, "training-text").text.startswith("Done: ae-")
    assert "Trained ae-" in by_testid(browser, "message").text
    assert rows[0].get_attribute("data-active") == "true"
    version = rows[0].get_attribute("data-version")
    assert by_testid(browser, "active-version").text == version
    assert rows[0].find_element(By.CSS_SELECTOR, '[data-testid="badge-active"]')
    wait(
        browser,
        lambda d: d.execute_script(
            "return ['loss-curve', 'preview'].every(id => { const i = document.getElementById(id);"
            " return i.complete && i.naturalWidth > 0; })"
        ),
        timeout=30,
        message="the loss curve or preview did not load",
    )
    assert_no_console_errors(browser)
    screenshot(browser, "web-model.png")

    # Activating the active version again is harmless; the API answers 200 with it.
    answer = requests.post(
        f"{service.api}/models/autoencoder/versions/{version}/activate",
        headers=service.auth,
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["active"] == version

    # A search now fills all three columns.
    query_id, query_path = next(iter(catalogue.items()))
    browser.get(f"{service.base_url}/#search")
    upload(browser, query_path)
    for column in ("vgg16", "autoencoder", "fused"):
        wait(browser, column_done(column))
    assert result_ids(browser, "autoencoder")[0] == query_id
    assert version in by_testid(browser, "about-autoencoder").text
    assert "lower is better" in by_testid(browser, "about-autoencoder").text
    screenshot(browser, "web-trained.png")


def test_docs_page_renders_the_spec_offline(service, browser):
    browser.get(f"{service.api}/docs")
    operations = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"), timeout=60)
    spec = requests.get(f"{service.api}/openapi.json", timeout=10).json()
    count = sum(
        method in {"get", "post", "delete"} for item in spec["paths"].values() for method in item
    )
    assert len(operations) == count
    assert "Image similarity search" in browser.find_element(By.CSS_SELECTOR, ".info").text
    assert browser.find_element(By.CSS_SELECTOR, ".btn.authorize")  # the X-API-Key scheme
    assert_only_own_resources(browser, service.base_url)
    assert_no_console_errors(browser)
    screenshot(browser, "web-docs.png")
