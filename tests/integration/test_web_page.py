"""The web page and the API docs page in a real headless Chromium (Debian's, no download),
against the real system (Redis, Celery workers, gateway).

Screenshots go to test-artifacts/ (git-ignored): web-page.png (a search before any
autoencoder exists), web-catalogue.png, web-model.png, web-trained.png (a search after the
training), web-dark.png, web-360-*.png and web-docs.png. With UPDATE_SCREENSHOTS=1 the
ones README.md shows are written to docs/screenshots/ as well.
"""

import base64
import os
import re
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PRODUCTS = 10
EPOCHS = 6  # enough for the page to show an epoch or two of progress, few enough to be quick
# A training started outside the page: long enough (about 0.3 s an epoch here) for the page
# to show its epochs in two places.
LONG_EPOCHS = 60
# The gateway may fetch from itself (127.0.0.1), so the page's search by URL can be tested
# without the internet; every other address that is not public stays refused.
SERVICE_ENV = {"URL_FETCH_ALLOWED_NETWORKS": '["127.0.0.1/32"]'}


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


def screenshot(driver, name, docs_name=None):
    """A picture of the whole page, below the fold too (Chromium's DevTools protocol); with
    UPDATE_SCREENSHOTS=1, also docs/screenshots/<docs_name> (shown in README.md)."""
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
    if docs_name and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (DOCS_SCREENSHOTS / docs_name).write_bytes(base64.b64decode(shot["data"]))


def enter_api_key(driver, key):
    field = by_testid(driver, "api-key")
    field.clear()
    field.send_keys(key)  # stored in sessionStorage (this tab only) as it is typed
    assert driver.execute_script("return sessionStorage.getItem('imgsearch.apiKey')") == key
    assert driver.execute_script("return localStorage.getItem('imgsearch.apiKey')") is None


def upload(driver, path):
    by_testid(driver, "file-input").send_keys(str(path))


def search_done(driver, columns=("vgg16", "fused")):
    for name in columns:
        wait(driver, column_done(name), message=f"the {name} column never finished")
    wait(driver, lambda d: by_testid(d, "search-status").get_attribute("data-finished") == "true")


def job_id_in_address(driver) -> str:
    match = re.search(r"#/search/([0-9a-f]+)$", driver.current_url)
    assert match, driver.current_url
    return match.group(1)


def fresh_page(driver, url):
    """Load ``url`` as a new document (a hash change alone would not reload the page)."""
    driver.get("about:blank")
    driver.get(url)


def labels_in(driver, column):
    selector = f'[data-testid="column-{column}"] [data-testid="result"] summary'
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def no_horizontal_overflow(driver):
    return driver.execute_script("return document.documentElement.scrollWidth <= 360")


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
    # Scores say what they are: a similarity for vgg16; the counts say how many there were.
    assert "#1" in first.text and "similarity 1.00" in first.text
    shown = len(result_ids(browser, "vgg16"))
    assert by_testid(browser, "count-vgg16").text == f"Showing {shown} of {len(catalogue)}"
    assert by_testid(browser, "count-fused").text == f"Showing {shown} of {len(catalogue)}"
    fused_first = browser.find_element(
        By.CSS_SELECTOR, '[data-testid="column-fused"] [data-testid="result"]'
    )
    assert "relative score 1.00" in fused_first.text and "vgg16 #1" in fused_first.text
    assert "autoencoder #" not in by_testid(browser, "column-fused").text  # no such ranks
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
    assert "/api/" not in notice.text and "POST" not in notice.text  # words for people
    assert "autoencoder: not trained yet" in by_testid(browser, "search-status-text").text
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
    wait(browser, lambda d: "#/search/" in d.current_url)
    wait(browser, column_done("vgg16"))
    # The catalogue image is the query (by its id), so it is left out of its own results.
    found = result_ids(browser, "vgg16")
    assert picked not in found and len(found) == len(catalogue) - 1
    assert by_testid(browser, "count-vgg16").text == f"Showing {len(found)} of {len(found)}"
    assert "left out of its own results" in by_testid(browser, "query-name").text


def test_a_photo_can_come_from_the_camera_a_paste_a_drop_or_a_url(service, catalogue, browser):
    browser.get(f"{service.base_url}/#search")
    ids, paths = list(catalogue), list(catalogue.values())

    # The camera: a file input phones open on the back camera.
    camera = by_testid(browser, "camera-input")
    assert camera.get_attribute("accept") == "image/*"
    assert camera.get_attribute("capture") == "environment"
    camera.send_keys(str(paths[0]))
    search_done(browser)
    assert result_ids(browser, "vgg16")[0] == ids[0]

    # Paste: a real Ctrl+V of an image put on Chromium's clipboard.
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {
            "origin": service.base_url,
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        },
    )
    copied = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        (async () => {
          const jpeg = await (await fetch(arguments[0])).blob();
          const bitmap = await createImageBitmap(jpeg);
          const canvas = document.createElement("canvas");
          [canvas.width, canvas.height] = [bitmap.width, bitmap.height];
          canvas.getContext("2d").drawImage(bitmap, 0, 0);
          const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
          await navigator.clipboard.write([new ClipboardItem({"image/png": png})]);
          return "copied";
        })().then(done, (err) => done(String(err)));
        """,
        f"{service.api}/images/{ids[1]}/content",
    )
    assert copied == "copied"
    before = browser.current_url
    browser.find_element(By.TAG_NAME, "h1").click()  # the focus on the page, in no field
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("v").key_up(Keys.CONTROL).perform()
    wait(browser, lambda d: d.current_url != before, timeout=30)
    search_done(browser)
    assert by_testid(browser, "query-name").text == "pasted photo"
    assert result_ids(browser, "vgg16")[0] == ids[1]

    # Drag and drop of a file onto the page, outside the drop zone (DevTools' drag events).
    before = browser.current_url
    for kind in ("dragEnter", "dragOver", "drop"):
        browser.execute_cdp_cmd(
            "Input.dispatchDragEvent",
            {
                "type": kind,
                "x": 700,
                "y": 700,
                "data": {"items": [], "files": [str(paths[2])], "dragOperationsMask": 1},
            },
        )
    wait(browser, lambda d: d.current_url != before, timeout=30)
    search_done(browser)
    assert by_testid(browser, "query-name").text == paths[2].name
    assert result_ids(browser, "vgg16")[0] == ids[2]

    # A photo's address: the gateway fetches it (here from itself: allowed by SERVICE_ENV).
    address = f"{service.api}/images/{ids[3]}/content"
    by_testid(browser, "url-input").send_keys(address)
    by_testid(browser, "url-search").click()
    wait(browser, lambda d: by_testid(d, "query-name").text == address)
    search_done(browser)
    assert result_ids(browser, "vgg16")[0] == ids[3]
    job = requests.get(f"{service.api}/jobs/{job_id_in_address(browser)}", timeout=10).json()
    assert job["params"]["url"] == address

    # An address the gateway refuses: the service's sentence, not a code or a route.
    field = by_testid(browser, "url-input")
    field.clear()
    field.send_keys("http://169.254.169.254/latest/photo.jpg")
    by_testid(browser, "url-search").click()
    message = wait(
        browser, lambda d: by_testid(d, "message").is_displayed() and by_testid(d, "message")
    )
    refusal = requests.post(
        f"{service.api}/searches",
        data={"url": "http://169.254.169.254/latest/photo.jpg"},
        timeout=10,
    ).json()["error"]
    assert message.text == refusal["message"] and "/api/" not in message.text
    browser.get_log("browser")  # the 400 above is logged as a console error: expected here
    field.clear()  # the page stays loaded: later views (and screenshots) would show it


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
    assert "POST" not in by_testid(browser, "message").text
    assert rows[0].get_attribute("data-active") == "true"
    version = rows[0].get_attribute("data-version")
    assert by_testid(browser, "active-version").text == version
    assert rows[0].find_element(By.CSS_SELECTOR, '[data-testid="badge-active"]')
    assert by_testid(browser, "artifacts-title").text == f"Version {version}"
    caption = by_testid(browser, "preview-caption").text
    assert "Top row" in caption and "Bottom row" in caption and "expected" in caption
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
    screenshot(browser, "web-trained.png", "search.png")


def test_photos_are_added_from_the_page_then_filtered_by_label(
    service, catalogue, sample_images, browser, tmp_path
):
    browser.get(f"{service.base_url}/#catalogue")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    product, photos = list(sample_images.items())[PRODUCTS]  # not in the catalogue yet
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    files = [photos[0], photos[1], bad]

    # Without the key nothing is sent, and the page says what is needed.
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="catalogue-item"]'))
    by_testid(browser, "add-input").send_keys(str(photos[0]))
    assert "API key" in wait(browser, lambda d: by_testid(d, "message").text)
    assert by_testid(browser, "upload-list").text == ""

    enter_api_key(browser, service.api_key)
    by_testid(browser, "add-label").send_keys(product)
    by_testid(browser, "add-input").send_keys("\n".join(str(f) for f in files))
    rows = wait(
        browser,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, '[data-testid="upload-row"]')) == 3
            and d.find_elements(By.CSS_SELECTOR, '[data-testid="upload-row"]')
        ),
    )
    assert [r.get_attribute("data-name") for r in rows] == [f.name for f in files]
    wait(
        browser,
        lambda d: all(
            r.get_attribute("data-state") in ("done", "rejected")
            for r in d.find_elements(By.CSS_SELECTOR, '[data-testid="upload-row"]')
        ),
        timeout=120,
        message="the uploads never finished",
    )
    states = {r.get_attribute("data-name"): r for r in rows}
    for photo in photos[:2]:
        assert states[photo.name].get_attribute("data-state") == "done"
        assert "searchable" in states[photo.name].text
    refused = states[bad.name]
    assert refused.get_attribute("data-state") == "rejected"
    own = requests.post(
        f"{service.api}/images",
        files={"file": (bad.name, bad.read_bytes())},
        headers=service.auth,
        timeout=10,
    ).json()["error"]["message"]
    assert f"refused: {own}" in refused.text  # the reason the API gave
    assert "2 photos added" in by_testid(browser, "message").text
    listed = requests.get(f"{service.api}/images?limit=100", timeout=10).json()["images"]
    added = [i for i in listed if i["metadata"].get("label") == product]
    assert len(added) == 2
    wait(
        browser,
        lambda d: d.find_elements(
            By.CSS_SELECTOR, f'[data-testid="catalogue-item"][data-id="{added[0]["id"]}"]'
        ),
    )
    screenshot(browser, "web-catalogue-added.png", "catalogue.png")
    browser.get_log("browser")  # the refused file's 415 is logged as a console error

    # Only images with that label: a search with one of the new photos finds the other only.
    browser.get(f"{service.base_url}/#search")
    by_testid(browser, "label-filter").send_keys(product)
    upload(browser, photos[0])
    search_done(browser)
    assert set(labels_in(browser, "vgg16")) == {product}
    assert by_testid(browser, "count-vgg16").text == "Showing 2 of 2"
    assert product in by_testid(browser, "query-filter").text

    # A click on a result searches with it, by its id: it is left out of its own results.
    clicked = result_ids(browser, "vgg16")[1]
    before = browser.current_url
    browser.find_element(
        By.CSS_SELECTOR,
        f'[data-testid="column-vgg16"] [data-testid="result"][data-id="{clicked}"] '
        '[data-testid="search-by-image"]',
    ).click()
    wait(browser, lambda d: d.current_url != before, timeout=30)
    search_done(browser)
    job = requests.get(f"{service.api}/jobs/{job_id_in_address(browser)}", timeout=10).json()
    assert job["params"] == {"k": 10, "filter": {"label": product}, "image_id": clicked}
    assert clicked not in result_ids(browser, "vgg16")
    assert result_ids(browser, "vgg16") == [i["id"] for i in added if i["id"] != clicked]
    assert by_testid(browser, "count-vgg16").text == "Showing 1 of 1"
    by_testid(browser, "label-filter").clear()


def test_results_read_at_a_glance_page_highlight_and_share(service, catalogue, browser):
    """After the training: scores worded per method, 'Showing k of N' and 'Show more', the
    same image lit across the columns, and the search's address that opens it again."""
    browser.get(f"{service.base_url}/#search")
    k_input = by_testid(browser, "k-input")
    k_input.clear()
    k_input.send_keys("3")
    query_id, query_path = next(iter(catalogue.items()))
    upload(browser, query_path)
    search_done(browser, ("vgg16", "autoencoder", "fused"))
    total = requests.get(f"{service.api}/stats", timeout=10).json()["catalogue_size"]
    for column in ("vgg16", "autoencoder", "fused"):
        assert by_testid(browser, f"count-{column}").text == f"Showing 3 of {total}"
    scores = lambda column: [  # noqa: E731
        e.text
        for e in browser.find_elements(
            By.CSS_SELECTOR, f'[data-testid="column-{column}"] [data-testid="score"]'
        )
    ]
    assert all(re.fullmatch(r"similarity -?\d\.\d\d", t) for t in scores("vgg16"))
    assert all(re.fullmatch(r"distance \d+\.\d\d", t) for t in scores("autoencoder"))
    assert scores("fused")[0] == "relative score 1.00"
    assert all(re.fullmatch(r"relative score [01]\.\d\d", t) for t in scores("fused"))

    # Each fused result names its rank in the methods that ranked it, and only those.
    job_id = job_id_in_address(browser)
    job = requests.get(f"{service.api}/jobs/{job_id}", timeout=10).json()
    fused = browser.find_elements(
        By.CSS_SELECTOR, '[data-testid="column-fused"] [data-testid="result"]'
    )
    for item, result in zip(fused, job["fused"]["results"], strict=True):
        shown = [e.text for e in item.find_elements(By.CSS_SELECTOR, '[data-testid="source-rank"]')]
        assert shown == [f"{m} #{r}" for m, r in result["ranks"].items()]

    # Show more asks again with a larger k.
    more = by_testid(browser, "show-more")
    assert more.is_displayed()
    more.click()
    wait(browser, lambda d: job_id_in_address(d) != job_id, timeout=30)
    search_done(browser, ("vgg16", "autoencoder", "fused"))
    shown = min(13, total)
    assert len(result_ids(browser, "vgg16")) == shown
    assert by_testid(browser, "count-vgg16").text == f"Showing {shown} of {total}"
    assert not by_testid(browser, "show-more").is_displayed()  # every image is shown

    # The image under the pointer, or with the focus, is lit in every column.
    target = result_ids(browser, "autoencoder")[1]
    selector = f'[data-testid="result"][data-id="{target}"]'
    ActionChains(browser).move_to_element(
        browser.find_element(By.CSS_SELECTOR, f'[data-testid="column-autoencoder"] {selector}')
    ).perform()
    lit = browser.find_elements(By.CSS_SELECTOR, f"{selector}.same-image")
    assert len(lit) == 3, "the same image in the three columns"
    assert not browser.find_elements(By.CSS_SELECTOR, f'.same-image:not([data-id="{target}"])')
    ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).perform()
    assert not browser.find_elements(By.CSS_SELECTOR, ".same-image")
    button = f'[data-testid="column-vgg16"] {selector} [data-testid="search-by-image"]'
    browser.execute_script("arguments[0].focus()", browser.find_element(By.CSS_SELECTOR, button))
    assert len(browser.find_elements(By.CSS_SELECTOR, f"{selector}.same-image")) == 3

    # The address opens the finished search again, in a new page.
    shared = browser.current_url
    ids = {c: result_ids(browser, c) for c in ("vgg16", "autoencoder", "fused")}
    fresh_page(browser, shared)
    search_done(browser, ("vgg16", "autoencoder", "fused"))
    assert {c: result_ids(browser, c) for c in ids} == ids
    assert "not kept" in by_testid(browser, "query-name").text  # an upload's photo is not stored
    fresh_page(browser, f"{service.base_url}/#/search/0123456789abcdef0123456789abcdef")
    assert "no longer kept" in wait(browser, lambda d: by_testid(d, "message").text)
    browser.get_log("browser")  # the unknown job's 404 is logged as a console error
    by_testid(browser, "k-input").clear()


def test_a_training_started_elsewhere_shows_in_the_model_view_and_the_search(
    service, catalogue, browser
):
    before = requests.get(f"{service.api}/models/autoencoder", timeout=10).json()
    assert before["training_job_id"] is None
    job_id = service.train(LONG_EPOCHS, patience=LONG_EPOCHS)  # not from the page
    listed = requests.get(f"{service.api}/models/autoencoder", timeout=10).json()
    assert listed["training_job_id"] == job_id

    # A page opened afterwards shows it in the autoencoder column...
    fresh_page(browser, f"{service.base_url}/#search")
    upload(browser, next(iter(catalogue.values())))
    search_done(browser, ("vgg16", "autoencoder", "fused"))
    epoch = (
        rf"Epoch \d+ of at most {LONG_EPOCHS} · loss [\d.]+ · validation loss [\d.]+"
        r" · about .+ left"
    )
    line = wait(
        browser,
        lambda d: (
            re.search(epoch, by_testid(d, "column-training").text)
            and by_testid(d, "column-training")
        ),
        timeout=120,
        message="the column never showed the training's epochs",
    )
    assert line.text.startswith("A new version is training")
    # ... and in the Model view, with the same words.
    browser.get(f"{service.base_url}/#model")
    wait(
        browser,
        lambda d: re.fullmatch(epoch, by_testid(d, "training-text").text),
        timeout=60,
        message="the Model view never showed the training's epochs",
    )
    assert by_testid(browser, "train-button").get_attribute("disabled") is not None

    # When it ends, the page says what became of the new version, as the job does.
    wait(browser, lambda d: by_testid(d, "training-text").text.startswith("Done: "), timeout=400)
    job = service.wait(job_id)
    outcome = job["methods"]["autoencoder"]
    version, activation = outcome["version"], outcome["activation"]
    message = wait(browser, lambda d: by_testid(d, "message").text)
    if activation["activated"]:
        assert f"Trained {version}: it now answers autoencoder searches" in message
    else:
        assert f"Trained {version}, kept as a candidate" in message
        assert activation["reason"] in message
    row = f'[data-testid="version-row"][data-version="{version}"]'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row))
    status = browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-status")
    assert status == ("active" if activation["activated"] else "candidate")

    # The curves follow the version shown: the new one first, then the one clicked.
    assert by_testid(browser, "artifacts-title").text == f"Version {version}"
    assert version in by_testid(browser, "loss-curve").get_attribute("src")
    other = before["versions"][0]["version"]
    browser.find_element(
        By.CSS_SELECTOR,
        f'[data-testid="version-row"][data-version="{other}"] [data-testid="show-artifacts"]',
    ).click()
    assert by_testid(browser, "artifacts-title").text == f"Version {other}"
    for image in ("loss-curve", "preview"):
        assert other in by_testid(browser, image).get_attribute("src")
    selected = browser.find_element(
        By.CSS_SELECTOR, '[data-testid="version-row"][aria-selected="true"]'
    )
    assert selected.get_attribute("data-version") == other
    assert_no_console_errors(browser)
    browser.find_element(
        By.CSS_SELECTOR,
        f'[data-testid="version-row"][data-version="{version}"] [data-testid="show-artifacts"]',
    ).click()
    assert by_testid(browser, "artifacts-title").text == f"Version {version}"
    screenshot(browser, "web-model-versions.png", "model.png")


def test_dark_mode_and_no_horizontal_scrolling_at_360_px(service, catalogue, browser):
    def background():
        return browser.execute_script(
            "return getComputedStyle(document.documentElement).backgroundColor"
        )

    def is_dark():
        rgb = [int(c) for c in re.findall(r"\d+", background())[:3]]
        return sum(rgb) < 3 * 80

    # The system's preference (Chromium's emulated prefers-color-scheme) ...
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    fresh_page(browser, f"{service.base_url}/#search")
    browser.execute_script("localStorage.removeItem('imgsearch.theme')")
    browser.refresh()
    wait(browser, lambda d: is_dark(), timeout=10, message="no dark colours for a dark system")
    toggle = by_testid(browser, "theme-toggle")
    assert toggle.get_attribute("aria-pressed") == "true" and toggle.text == "Light mode"
    upload(browser, next(iter(catalogue.values())))
    search_done(browser, ("vgg16", "autoencoder", "fused"))
    screenshot(browser, "web-dark.png", "search-dark.png")
    # ... and the toggle, which wins over it and is remembered.
    toggle.click()
    assert not is_dark() and toggle.get_attribute("aria-pressed") == "false"
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    toggle.click()
    assert is_dark()
    browser.refresh()
    wait(browser, lambda d: is_dark(), timeout=10, message="the choice was not remembered")
    by_testid(browser, "theme-toggle").click()
    assert not is_dark()

    # 360 px wide: nothing to scroll sideways, in every view.
    browser.set_window_size(360, 800)
    try:
        wait(browser, lambda d: d.execute_script("return window.innerWidth") <= 360, timeout=10)
        for view in ("search", "catalogue", "model"):
            fresh_page(browser, f"{service.base_url}/#{view}")
            if view == "search":
                assert by_testid(browser, "camera-button").is_displayed()
                upload(browser, next(iter(catalogue.values())))
                search_done(browser, ("vgg16", "autoencoder", "fused"))
            elif view == "catalogue":
                wait(
                    browser,
                    lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="catalogue-item"]'),
                )
            else:
                wait(
                    browser,
                    lambda d: (
                        len(d.find_elements(By.CSS_SELECTOR, '[data-testid="version-row"]')) >= 2
                    ),
                )
                wait(
                    browser, lambda d: by_testid(d, "preview").get_attribute("naturalWidth") != "0"
                )
            assert no_horizontal_overflow(browser), (
                view,
                browser.execute_script("return document.documentElement.scrollWidth"),
            )
            screenshot(
                browser, f"web-360-{view}.png", "search-360.png" if view == "search" else None
            )
    finally:
        browser.set_window_size(1440, 1000)
    assert_no_console_errors(browser)


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
