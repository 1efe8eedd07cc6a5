"""A tfds dataset that needs a download fails fast when the network is unreachable."""

import socket
import time

import pytest

from tfpipe.data import offline, sources
from tfpipe.errors import TfpipeError


def test_cats_vs_dogs_without_network_fails_within_15_seconds(tmp_path):
    if offline.any_reachable(["https://download.microsoft.com/"], timeout=5):
        pytest.skip("this machine reaches download.microsoft.com; the test must not download cats_vs_dogs")
    started = time.monotonic()
    with pytest.raises(TfpipeError) as error:
        sources.open_source("cats_vs_dogs", str(tmp_path))
    assert time.monotonic() - started < 15
    message = str(error.value)
    assert "network is unreachable" in message and "tfds build cats_vs_dogs" in message


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers: the worst case for a client."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"


def test_a_server_that_never_answers_is_given_up_on_time(tmp_path, monkeypatch, silent_server):
    monkeypatch.setattr(offline, "server_urls", lambda url_infos: [silent_server])
    monkeypatch.setattr(sources, "NETWORK_CHECK_SECONDS", 2.0)
    started = time.monotonic()
    with pytest.raises(TfpipeError, match="must be downloaded"):
        sources.open_source("beans", str(tmp_path))
    assert time.monotonic() - started < 10


def test_any_http_answer_counts_as_reachable():
    import http.server
    import threading

    class Teapot(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(418)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Teapot)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert offline.any_reachable([f"http://127.0.0.1:{server.server_port}/"], timeout=5)
    finally:
        server.shutdown()


def test_server_urls_come_from_the_dataset_urls():
    urls = {"https://download.microsoft.com/x/y.zip": None, "http://example.org:8080/a": None}
    assert offline.server_urls(urls) == ["http://example.org:8080/", "https://download.microsoft.com/"]
    assert offline.server_urls(None) == ["https://storage.googleapis.com/"]
