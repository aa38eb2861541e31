"""Bad and unusual input through HTTP: each format indexed and found, each fault a clear 4xx.

Unit tests (tests/fast/test_images.py) check canonicalisation pixel by pixel; these check the
same cases end to end: every format goes through the gateway, a worker embeds it, and a
search finds it; every kind of bad upload gets a 4xx a person understands; and after all of
it the workers are still there and a normal search works.
"""

import contextlib
import io
import json
import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageStat

from deploy.launcher import Processes, free_port, gateway_healthy, start_gateway, wait_until
from shared import names
from shared.celery_app import make_celery
from shared.settings import CommonSettings
from tests.conftest import fresh_database
from tests.helpers.images import distinct_images, encode, png
from tests.integration.conftest import API_KEY, Service, base_env, stopping
from tests.integration.system import answers, kill, start_extra_gateway

pytestmark = pytest.mark.integration


def photo(sample_images, product: str) -> Image.Image:
    image = Image.open(sample_images[product][0])
    image.load()
    return image.convert("RGB")


def sixteen_bit_png(image: Image.Image) -> bytes:
    wide = image.convert("L").convert("I").point(lambda v: v * 257)  # 0..255 -> 0..65535
    return encode(wide.convert("I;16"), "PNG")


def alpha_png(image: Image.Image) -> tuple[bytes, Image.Image]:
    """A photo with a transparent border; and what it looks like flattened onto white."""
    rgba = image.convert("RGBA")
    mask = Image.new("L", rgba.size, 0)
    mask.paste(255, (24, 24, rgba.width - 24, rgba.height - 24))
    rgba.putalpha(mask)
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=mask)
    return encode(rgba, "PNG"), flat


def exif_rotated_jpeg(image: Image.Image) -> tuple[bytes, Image.Image]:
    """Pixels stored sideways with EXIF orientation 6; and the picture a viewer shows."""
    upright = image.crop((0, 48, 256, 208))  # 256 x 160: the stored image is 160 x 256
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif), upright


@pytest.fixture(scope="module")
def formats(service, sample_images) -> dict[str, dict]:
    """One catalogue entry per format, each made from a different product's photo.

    ``query`` is the plain RGB picture a person sees in the file: searching with it must
    find the entry first, which shows the format was decoded to the right picture (colours
    not inverted, orientation applied, the first frame of an animation).
    """
    p = {name: photo(sample_images, name) for name in sample_images}
    alpha, alpha_flat = alpha_png(p["Garlic"])
    rotated, upright = exif_rotated_jpeg(p["Zucchini"])
    gif = encode(
        p["Red-Beet"].quantize(256),
        "GIF",
        save_all=True,
        append_images=[p["Tropicana-Juice-Smooth"].quantize(256)],
        duration=100,
        loop=0,
    )
    entries = {
        "cmyk-jpeg": (encode(p["Lemon"].convert("CMYK"), "JPEG"), p["Lemon"]),
        "grey-jpeg": (encode(p["Aubergine"].convert("L"), "JPEG"), p["Aubergine"]),
        "grey16-png": (sixteen_bit_png(p["Orange"]), p["Orange"]),
        "palette-png": (
            encode(p["Plum"].convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
            p["Plum"],
        ),
        "alpha-png": (alpha, alpha_flat),
        "animated-gif": (gif, p["Red-Beet"]),
        "exif-jpeg": (rotated, upright),
        "webp": (encode(p["Yellow-Bell-Pepper"], "WEBP", quality=90), p["Yellow-Bell-Pepper"]),
        "bmp": (encode(p["Galia-Melon"], "BMP"), p["Galia-Melon"]),
        "tiff": (encode(p["Bravo-Apple-Juice"], "TIFF"), p["Bravo-Apple-Juice"]),
    }
    assert Image.open(io.BytesIO(entries["grey16-png"][0])).mode == "I;16"
    assert Image.open(io.BytesIO(gif)).n_frames == 2
    files = [("file", (f"{name}.bin", data)) for name, (data, _) in entries.items()]
    response = requests.post(
        f"{service.api}/images",
        files=files,
        data=[("id", name) for name in entries],
        headers=service.auth,
        timeout=60,
    )
    assert response.status_code == 202, response.text
    assert response.json()["rejected"] == []
    job = service.wait(response.json()["job_id"])
    assert job["status"] == "done", job
    assert job["methods"]["vgg16"]["embedded"] == len(entries)
    return {
        name: {"data": data, "query": encode(query, "PNG")}
        for name, (data, query) in entries.items()
    }


def vgg16_results(service, job_id: str) -> list[dict]:
    job = service.wait(job_id, timeout=180)
    assert job["status"] == "done", job
    return job["methods"]["vgg16"]["results"]


def test_every_format_is_indexed_and_found_first(service, formats):
    # Submit every search first; the worker answers them while we wait for the first.
    by_itself = {
        name: service.search(entry["data"], k=3, methods="vgg16") for name, entry in formats.items()
    }
    by_picture = {
        name: service.search(entry["query"], k=3, methods="vgg16")
        for name, entry in formats.items()
    }
    for name, job_id in by_itself.items():
        top = vgg16_results(service, job_id)[0]
        assert top["id"] == name, (name, top)
        assert top["score"] == pytest.approx(1.0, abs=1e-3), (name, top)
    for name, job_id in by_picture.items():
        assert vgg16_results(service, job_id)[0]["id"] == name, name


def stored(service, image_id: str) -> Image.Image:
    response = requests.get(f"{service.api}/images/{image_id}/content", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def test_formats_are_stored_upright_rgb_and_flattened(service, formats):
    meta = requests.get(f"{service.api}/images/exif-jpeg", timeout=10).json()
    assert (meta["width"], meta["height"]) == (256, 160), "EXIF orientation was not applied"
    assert stored(service, "exif-jpeg").size == (256, 160)
    assert stored(service, "alpha-png").getpixel((5, 5)) >= (245, 245, 245)  # onto white
    grey16 = ImageStat.Stat(stored(service, "grey16-png").convert("L")).mean[0]
    assert 20 < grey16 < 235, "16-bit grey was clipped to black or white"
    for name in formats:
        assert stored(service, name).mode == "RGB", name


def bomb_png() -> bytes:
    """A PNG that declares 30,000 x 30,000 pixels in a few hundred kilobytes."""
    return encode(Image.new("1", (30_000, 30_000)), "PNG")


def truncated_jpeg() -> bytes:
    return encode(Image.new("RGB", (300, 300), (200, 10, 10)), "JPEG")[:400]


BAD_FILES = {
    "not-an-image": (b"%PDF-1.4 this is a document", 415, "not_an_image"),
    "html-named-jpg": (b"<html><body>hello</body></html>", 415, "not_an_image"),
    "zero-bytes": (b"", 400, "empty_file"),
    "truncated-jpeg": (truncated_jpeg(), 400, "corrupt_image"),
    "decompression-bomb": (bomb_png(), 413, "too_many_pixels"),
}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    # A sentence for a person, not a traceback or a bare code.
    assert len(error["message"]) > 15 and "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize("endpoint", ["searches", "images"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_get_a_clear_4xx(service, endpoint, case):
    data, status, code = BAD_FILES[case]
    response = requests.post(
        f"{service.api}/{endpoint}",
        files={"file": (f"{case}.jpg", data, "image/jpeg")},
        headers=service.auth,
        timeout=30,
    )
    assert_error(response, status, code)


def test_a_bad_file_in_a_bulk_upload_fails_alone(service):
    good = distinct_images(3, seed=11)
    bad = {case: data for case, (data, _, _) in BAD_FILES.items()}
    files, expected_rejected = [], []
    for n, (case, data) in enumerate(bad.items()):
        if n < len(good):
            files.append(("file", (f"good-{n}.png", good[n])))
        expected_rejected.append((len(files), f"{case}.jpg", BAD_FILES[case][2]))
        files.append(("file", (f"{case}.jpg", data)))
    before = requests.get(f"{service.api}/stats", timeout=5).json()["catalogue_size"]
    response = requests.post(f"{service.api}/images", files=files, headers=service.auth, timeout=60)
    assert response.status_code == 202, response.text
    body = response.json()
    assert [i["filename"] for i in body["images"]] == ["good-0.png", "good-1.png", "good-2.png"]
    rejected = [(r["position"], r["filename"], r["code"]) for r in body["rejected"]]
    assert rejected == expected_rejected
    assert all(len(r["message"]) > 15 for r in body["rejected"])
    job = service.wait(body["job_id"])
    assert job["status"] == "done", job
    assert job["methods"]["vgg16"]["embedded"] == 3
    after = requests.get(f"{service.api}/stats", timeout=5).json()["catalogue_size"]
    assert after == before + 3

    # Nothing usable at all: 400, and still every file's reason.
    files = [("file", (f"{case}.jpg", data)) for case, data in bad.items()]
    response = requests.post(f"{service.api}/images", files=files, headers=service.auth, timeout=60)
    error = assert_error(response, 400, "no_valid_images")
    assert [r["code"] for r in error["rejected"]] == [v[2] for v in BAD_FILES.values()]


@pytest.mark.parametrize(
    ("endpoint", "kwargs", "status", "code"),
    [
        ("images", {"files": {"image": ("a.png", png())}}, 400, "missing_file"),
        ("images", {"data": {"id": "x"}}, 400, "missing_file"),
        ("searches", {"files": {"image": ("a.png", png())}}, 400, "missing_file"),
        ("searches", {"json": {"file": "a.png"}}, 400, "missing_file"),
        ("searches", {}, 400, "missing_file"),
        (
            "searches",
            {"files": [("file", ("a", png())), ("file", ("b", png(1)))]},
            400,
            "one_file_only",
        ),
        (
            "images",
            {"files": [("file", ("a", png())), ("file", ("b", png(1)))], "data": {"id": "one"}},
            400,
            "id_count_mismatch",
        ),
    ],
    ids=[
        "wrong-field",
        "no-file",
        "wrong-field-in-a-search",
        "json-instead-of-multipart",
        "empty-body",
        "two-files-in-a-search",
        "ids-do-not-match-files",
    ],
)
def test_wrong_or_missing_multipart_fields(service, endpoint, kwargs, status, code):
    response = requests.post(
        f"{service.api}/{endpoint}", headers=service.auth, timeout=30, **kwargs
    )
    assert_error(response, status, code)


@pytest.mark.parametrize(
    "bad_id",
    [
        "a/b",
        "..",
        "../x",
        "a\\b",
        "x\ny",
        "x\ty",
        "x\x00y",
        "x\x1by",
        "-x",
        ".hidden",
        "é",
        "x" * 129,
        "../../etc/passwd",
        "a b",
        "x\u0007y",
    ],
)
def test_ids_with_separators_or_control_characters(service, bad_id):
    response = requests.post(
        f"{service.api}/images",
        files={"file": ("a.png", png(3))},
        data={"id": bad_id},
        headers=service.auth,
        timeout=30,
    )
    assert "invalid id" in assert_error(response, 400, "invalid_id")["message"]


@pytest.mark.parametrize(
    "path",
    ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a%00b", "a%0Ab", "a%2Fb/content", "x" * 300],
)
def test_odd_ids_in_urls_are_404_not_errors(service, path):
    for suffix in ("", "/thumbnail"):
        response = requests.get(f"{service.api}/images/{path}{suffix}", timeout=10)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"]


@pytest.mark.parametrize("k", ["-1", "0", "101", "1.5", "1e2", "99999999999999999999999", "ten"])
def test_k_out_of_range(service, k):
    response = requests.post(
        f"{service.api}/searches", files={"file": ("a.png", png())}, data={"k": k}, timeout=30
    )
    assert_error(response, 400, "invalid_k")


def test_an_unknown_method_is_refused(service):
    response = requests.post(
        f"{service.api}/searches",
        files={"file": ("a.png", png())},
        data={"methods": "sift"},
        timeout=30,
    )
    assert_error(response, 400, "unknown_method")


def test_unknown_ids_are_404(service):
    assert_error(requests.get(f"{service.api}/jobs/nope", timeout=10), 404, "job_not_found")
    assert_error(requests.get(f"{service.api}/images/nope", timeout=10), 404, "image_not_found")
    for path in ("images/nope/thumbnail", "no/such/route"):
        response = requests.get(f"{service.api}/{path}", timeout=10)
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] and len(error["message"]) > 10, error


@pytest.mark.parametrize("metadata", ["[1, 2", "[1, 2]", "[" * 100_000, "[" * 16_000])
def test_metadata_must_be_a_small_json_object(service, metadata):
    response = requests.post(
        f"{service.api}/images",
        files={"file": ("a.png", png())},
        data={"metadata": metadata},
        headers=service.auth,
        timeout=30,
    )
    assert_error(response, 400, "invalid_metadata")


@pytest.fixture(scope="module")
def small_gateway(service, tmp_path_factory):
    """A second gateway on the same Redis and workers with small upload limits."""
    gateway, process = start_extra_gateway(
        service,
        tmp_path_factory.mktemp("small-gateway"),
        MAX_UPLOAD_BYTES="65536",
        MAX_FILES_PER_REQUEST="3",
        MAX_IMAGE_PIXELS="1000000",
    )
    yield gateway
    kill(process, signal.SIGTERM)


def test_limits_are_configurable_and_answer_413(service, small_gateway, formats):
    noise = random.Random(5).randbytes(200_000)
    big = encode(Image.frombytes("L", (400, 500), noise), "PNG")  # incompressible: > 64 KiB
    assert len(big) > 65536
    huge = random.Random(6).randbytes(20_000_000)  # the client must read a 413, not a reset
    for endpoint, data in (("searches", big), ("images", big), ("searches", huge)):
        response = requests.post(
            f"{small_gateway.api}/{endpoint}",
            files={"file": ("big.png", data)},
            headers=small_gateway.auth,
            timeout=30,
        )
        error = assert_error(response, 413, "request_entity_too_large")
        assert "65,536 bytes" in error["message"]

    files = [("file", (f"{n}.png", png(n))) for n in range(4)]
    response = requests.post(
        f"{small_gateway.api}/images", files=files, headers=small_gateway.auth, timeout=30
    )
    assert "at most 3 files" in assert_error(response, 413, "too_many_files")["message"]

    wide = encode(Image.new("RGB", (1100, 1000), (9, 9, 9)), "PNG")  # 1.1 MP > 1 MP limit
    response = requests.post(
        f"{small_gateway.api}/searches", files={"file": ("wide.png", wide)}, timeout=30
    )
    assert "1,000,000 pixels" in assert_error(response, 413, "too_many_pixels")["message"]
    # The same image is fine under the default limits of the main gateway.
    response = requests.post(
        f"{service.api}/searches", files={"file": ("wide.png", wide)}, timeout=30
    )
    assert response.status_code == 202, response.text

    # Below the limits the small gateway works as usual.
    job_id = small_gateway.search(formats["webp"]["data"], k=3, methods="vgg16")
    assert vgg16_results(small_gateway, job_id)[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_a_task_that_cannot_succeed_fails_once(service):
    """A search whose query image is gone fails at once, with its reason, and is not retried."""
    app = make_celery(CommonSettings(redis_url=service.env["REDIS_URL"]), "test")
    task_id = "no-such-query-vgg16-0"
    result = app.send_task(
        names.task_search("vgg16"),
        args=["no-such-query", "query:no-such-query", 3],
        task_id=task_id,
        queue="vgg16.search",
    )
    with pytest.raises(Exception, match="expired or was never stored") as caught:
        result.get(timeout=60, propagate=True)
    assert type(caught.value).__name__ == "QueryImageMissing"
    assert result.state == "FAILURE"
    logs = "".join(p.read_text(errors="replace") for p in service.log_dir.glob("vgg16-*.log"))
    assert f"{task_id}] retry" not in logs.lower()


def test_workers_are_healthy_after_all_the_bad_input(service, formats):
    """Last in the module: every queue still has its worker, and a normal search works."""
    service.procs.check_alive()
    health = requests.get(f"{service.api}/health", timeout=10).json()
    assert health["status"] == "ok", health
    queues = {q for q, entry in health["queues"].items() if entry["workers"]}
    assert gateway_healthy(service.base_url, queues) and len(queues) == len(names.all_queues())
    top = vgg16_results(service, service.search(formats["webp"]["query"], k=3, methods="vgg16"))[0]
    assert top["id"] == "webp"


# A gateway alone (no workers: searches and uploads queue): memory and request limits
@contextlib.contextmanager
def gateway_alone(redis_url: str, log_dir, **overrides: str) -> Iterator[tuple[Service, int]]:
    """A gateway process on an empty database of its own, and its process id."""
    env = base_env(fresh_database(redis_url), **overrides)
    procs = Processes()
    port = free_port()
    with stopping(log_dir, procs):
        process = start_gateway(procs, env, port, log_dir)
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(base_url), 60, "the gateway to answer", procs)
        yield Service(base_url, API_KEY, env, procs, log_dir), process.pid


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (resident now) or VmHWM (the most it has been resident) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


@pytest.fixture(scope="module")
def largest_upload() -> bytes:
    """The costliest image the gateway accepts under its defaults: 50 Mpixel (the limit) as
    a progressive CMYK JPEG, which libjpeg decodes through whole-image coefficient buffers
    (8 bytes a pixel, 393 MB; an RGBA PNG takes 216 MB, WebP is limited to a quarter)."""
    side = 7071  # 49,999,041 pixels
    gradient = Image.linear_gradient("L").resize((side, side))
    bands = (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient, gradient)
    data = encode(Image.merge("CMYK", bands), "JPEG", progressive=True, subsampling=0)
    assert len(data) < 2_000_000
    return data


def post_searches(service: Service, data: bytes, count: int) -> list[requests.Response]:
    def search(_):
        return requests.post(
            f"{service.api}/searches", files={"file": ("big.jpg", data)}, timeout=150
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(search, range(count)))


def test_eight_concurrent_largest_uploads_stay_under_1_gb(
    redis_url, tmp_path, largest_upload, record_property
):
    # A generous wait: on a busy machine the eighth upload waits for seven decodes.
    with gateway_alone(redis_url, tmp_path, DECODE_WAIT_SECONDS="110") as (gateway, pid):
        idle = memory_mb(pid, "VmRSS")
        started = time.monotonic()
        responses = post_searches(gateway, largest_upload, 8)
        elapsed = time.monotonic() - started
        assert [r.status_code for r in responses] == [202] * 8, responses[0].text
        peak = memory_mb(pid, "VmHWM")
        # Freed memory goes back to the system (not kept in glibc's arenas): within a
        # minute at most; measured, at once.
        deadline = time.monotonic() + 60
        while (after := memory_mb(pid, "VmRSS")) >= 300 and time.monotonic() < deadline:
            time.sleep(1)
        for name, value in (("idle", idle), ("peak", peak), ("after", after)):
            record_property(f"gateway_rss_{name}_mb", round(value))
        print(
            f"\ngateway RSS: idle {idle:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB; "
            f"8 uploads answered in {elapsed:.1f} s"
        )
        assert peak < 1000, f"peak RSS {peak:.0f} MB"
        assert after < 300, f"RSS {after:.0f} MB a minute after the uploads"


def test_decodes_past_the_cap_wait_then_get_503_with_retry_after(
    redis_url, tmp_path, largest_upload
):
    overrides = {"MAX_CONCURRENT_DECODES": "1", "DECODE_WAIT_SECONDS": "0.5"}
    with gateway_alone(redis_url, tmp_path, **overrides) as (gateway, _):
        responses = post_searches(gateway, largest_upload, 4)
        statuses = sorted(r.status_code for r in responses)
        assert statuses[0] == 202 and statuses[-1] == 503, statuses
        for busy in (r for r in responses if r.status_code == 503):
            error = assert_error(busy, 503, "busy")
            assert "0.5 s" in error["message"]
            assert busy.headers["Retry-After"] == "1"


def test_json_bodies_over_the_limit_are_refused_before_parsing(redis_url, tmp_path):
    with gateway_alone(redis_url, tmp_path) as (gateway, pid):
        before = memory_mb(pid, "VmHWM")
        ids = [f"image-{n:08d}" for n in range(1_500_000)]  # about 24 MB of JSON
        body = json.dumps({"ids": ids}).encode()
        calls = {
            "lookup": (f"{gateway.api}/images/lookup", {}),
            "training": (f"{gateway.api}/models/autoencoder/trainings", gateway.auth),
        }
        for url, headers in calls.values():
            headers = {**headers, "Content-Type": "application/json"}
            response = requests.post(url, data=body, headers=headers, timeout=60)
            error = assert_error(response, 413, "json_too_large")
            assert "2,097,152 bytes" in error["message"]
            # Without a Content-Length (chunked), counted as it is read.
            chunks = (body[i : i + 65536] for i in range(0, 4_000_000, 65536))
            response = requests.post(url, data=chunks, headers=headers, timeout=60)
            assert_error(response, 413, "json_too_large")
        # Parsing that body costs hundreds of MB (README.md, "Measured here"); refusing it
        # takes next to nothing.
        assert memory_mb(pid, "VmHWM") - before < 100
        # Below the limit JSON is read as before.
        response = requests.post(calls["lookup"][0], json={"ids": ["nope", "x"]}, timeout=10)
        assert response.status_code == 200 and response.json() == {"existing": []}


def test_duplicate_ids_in_one_request_get_a_400_naming_the_id(redis_url, tmp_path):
    with gateway_alone(redis_url, tmp_path) as (gateway, _):
        files = [("file", (f"{n}.png", png(n))) for n in range(3)]
        response = requests.post(
            f"{gateway.api}/images",
            files=files,
            data=[("id", "one"), ("id", "twice"), ("id", "twice")],
            headers=gateway.auth,
            timeout=30,
        )
        assert "'twice'" in assert_error(response, 400, "duplicate_id")["message"]
        listed = requests.get(f"{gateway.api}/images", timeout=10).json()
        assert listed["total"] == 0, "nothing of a refused request is stored"


def test_every_413_names_the_limit_that_was_hit(redis_url, tmp_path):
    with gateway_alone(redis_url, tmp_path, MAX_FILES_PER_REQUEST="10") as (gateway, _):

        def upload(data, **kwargs):
            return requests.post(
                f"{gateway.api}/images", data=data, headers=gateway.auth, timeout=30, **kwargs
            )

        one_file = {"file": ("a.png", png())}
        error = assert_error(
            upload({"metadata": json.dumps({"x": "y" * 1_000_000})}, files=one_file),
            413,
            "form_field_too_large",
        )
        assert "262,144 bytes" in error["message"] and "67,108,864" not in error["message"]
        # 10 files: 38 parts (a file, an id and metadata each, and 8 more).
        error = assert_error(upload([("k", "1")] * 38, files=one_file), 413, "too_many_parts")
        assert "38 parts" in error["message"]
        assert upload([("k", "1")] * 37, files=one_file).status_code == 202
        files = [("file", (f"{n}.png", png(n))) for n in range(11)]
        assert (
            "at most 10 files"
            in assert_error(upload({}, files=files), 413, "too_many_files")["message"]
        )
