"""Fail fast when a tfds dataset needs a download and the network is unreachable.

Left alone, tfds retries an unreachable host for minutes before it gives up.
One bounded HTTP request to each of the dataset's own download servers tells
us in seconds. A bare TCP connection would not do: behind a transparent proxy
every connection opens, whether or not anything answers behind it.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# Tried when a dataset lists no download URLs of its own: tfds' bucket.
_FALLBACK_URLS = ("https://storage.googleapis.com/",)


def server_urls(url_infos) -> list[str]:
    """The root URL of every server a dataset downloads from."""
    roots = set()
    for url in url_infos or {}:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme and parts.netloc:
            roots.add(f"{parts.scheme}://{parts.netloc}/")
    return sorted(roots) or list(_FALLBACK_URLS)


def any_reachable(urls: list[str], timeout: float) -> bool:
    """Whether any server answers an HTTP HEAD request within `timeout` seconds in all.

    Any HTTP status counts as an answer. Each request runs in a daemon thread
    (name resolution ignores socket timeouts) and we stop waiting at the deadline.
    """
    answered = threading.Event()

    def ask(url):
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:
            answered.set()  # the server is there; it just did not like the request
        except Exception:  # noqa: BLE001 - every other failure means: not reachable from here
            pass

    threads = [threading.Thread(target=ask, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if answered.is_set():
            return True
    return answered.is_set()
