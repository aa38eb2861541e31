"""A thin HTTP client of /api/v1 with errors a person can read."""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


class ClientError(Exception):
    """Anything that went wrong talking to the service, said plainly."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status when the service answered with an error

    @property
    def refused_access(self) -> bool:
        """A missing or wrong key: every further request would be refused the same way."""
        return self.status in (401, 403)


def image_files(folder: Path) -> list[Path]:
    """Every image file below a folder, in a stable order."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def content_id(data: bytes) -> str:
    """The id the service gives an image uploaded without one (see shared/images.py)."""
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass
class ApiClient:
    base_url: str
    api_key: str | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.session = requests.Session()
        if self.api_key:
            self.session.headers["X-API-Key"] = self.api_key

    def request(self, method: str, path: str, **kwargs) -> Any:
        url = f"{self.base_url}/api/v1{path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as err:
            raise ClientError(
                f"the service at {self.base_url} is not reachable (is it running? `make run` "
                "starts it; --url or IMGSEARCH_URL point elsewhere)"
            ) from err
        except requests.Timeout as err:
            raise ClientError(f"the service at {self.base_url} did not answer in time") from err
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = error["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200] or response.reason
            raise ClientError(f"{response.status_code}: {message}", response.status_code)
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.json()
        return response.content

    def add_images(self, paths: list[Path], root: Path | None = None) -> dict[str, Any]:
        files = []
        metadata = []
        for path in paths:
            name = str(path.relative_to(root)) if root else path.name
            files.append(("file", (name, path.read_bytes())))
            metadata.append(("metadata", _label_metadata(path)))
        return self.request("POST", "/images", files=files, data=metadata)

    def existing(self, ids: list[str]) -> set[str]:
        return set(self.request("POST", "/images/lookup", json={"ids": ids})["existing"])

    def search(
        self,
        path: Path | None = None,
        k: int = 10,
        methods: str | None = None,
        image_id: str | None = None,
    ) -> dict[str, Any]:
        """Start a search with a photo's file or a catalogue image's id (left out of its
        own results); the 202 body."""
        data = {"k": str(k)} | ({"methods": methods} if methods else {})
        if image_id is not None:
            return self.request("POST", "/searches", data={**data, "image_id": image_id})
        if path is None:
            raise ValueError("a search needs a file or an image id")
        return self.request(
            "POST", "/searches", files={"file": (path.name, path.read_bytes())}, data=data
        )

    def wait(self, job_id: str, timeout: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.request("GET", f"/jobs/{job_id}", params={"wait": 20})
            if job["status"] in ("done", "failed"):
                return job
            if time.monotonic() > deadline:
                raise ClientError(f"job {job_id} still {job['status']} after {timeout:.0f}s")


def _label_metadata(path: Path) -> str:
    import json

    return json.dumps({"label": path.parent.name, "filename": path.name})
