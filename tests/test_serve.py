#!/usr/bin/env python3
"""`mnist serve` over HTTP on a free localhost port: right digits for MNIST test images sent as
PNG and as JSON, the same answers as `mnist predict`; bad requests answered with the right status
and a JSON error while the server keeps answering; slow clients timed out without holding up
others; 200 requests from 20 clients at once answered as one at a time; a clean stop on SIGTERM.
Needs data/mnist and the mnist binary in $MNIST_BINARY (ctest sets it)."""
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import BINARY, Server, mnist_test_digits, png_bytes, temporary_directory, train_model  # noqa: E402

PROBABILITY_TOLERANCE = 1e-5  # a batch of one and a batch of many may round the GEMMs differently


def request(port, method, path, body=None, content_type=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    all_headers = dict(headers or {})
    if content_type:
        all_headers["Content-Type"] = content_type
    connection.request(method, path, body=body, headers=all_headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type"), data


def predict(port, body, content_type):
    status, _, data = request(port, "POST", "/predict", body, content_type)
    return status, json.loads(data)


class Serve(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = temporary_directory()
        cls.model = train_model(cls.tmp.name)
        cls.server = Server(cls.model, "--timeout", "1")
        cls.port = cls.server.port
        cls.images, cls.labels = mnist_test_digits(100)

    @classmethod
    def tearDownClass(cls):
        status, stderr = cls.server.stop()
        cls.tmp.cleanup()
        # After everything above it still stops cleanly: no crash, and (in the sanitizer build) no
        # report of a memory error, undefined behaviour or leak.
        if status != 0 or "Sanitizer" in stderr or "runtime error" in stderr:
            raise AssertionError(f"mnist serve exited {status} after the tests: {stderr[-3000:]}")

    def assert_alive(self):
        status, _, data = request(self.port, "GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(data)["status"], "ok")

    def test_png_and_json_requests_answer_the_digits_as_predict_does(self):
        pngs = []
        right_png = right_json = 0
        for i, (image, label) in enumerate(zip(self.images, self.labels)):
            status, png_answer = predict(self.port, png_bytes(image), "image/png")
            self.assertEqual(status, 200, png_answer)
            status, json_answer = predict(self.port, json.dumps({"pixels": list(image)}), "application/json")
            self.assertEqual(status, 200, json_answer)
            right_png += png_answer["digit"] == label
            right_json += json_answer["digit"] == label
            self.assertEqual(json_answer["input"], list(image))  # used as it is
            self.assertEqual(len(png_answer["probabilities"]), 10)
            self.assertAlmostEqual(sum(png_answer["probabilities"]), 1.0, places=6)
            self.assertEqual(png_answer["model"], "784-256-10 MLP")
            self.assertGreater(png_answer["seconds"], 0)
            pngs.append(png_answer)
        # A PGM of the same digit (P5, as netpbm writes it) reads as the PNG does.
        for image, answer in zip(self.images[:10], pngs):
            status, pgm_answer = predict(self.port, b"P5\n28 28\n255\n" + image, "image/x-portable-graymap")
            self.assertEqual(status, 200, pgm_answer)
            self.assertEqual(pgm_answer["probabilities"], answer["probabilities"])
        # The model reads about 97% of the test set; 100 of its digits are read at 90% or better.
        self.assertGreaterEqual(right_png, 90)
        self.assertGreaterEqual(right_json, 90)

        # The same files through `mnist predict --json`: the same digits and probabilities.
        with temporary_directory() as directory:
            files = []
            for i, image in enumerate(self.images[:20]):
                files.append(os.path.join(directory, f"{i}.png"))
                with open(files[-1], "wb") as file:
                    file.write(png_bytes(image))
            result = subprocess.run([BINARY, "predict", "--json", "--top", "10", "--model", self.model, *files],
                                    capture_output=True, text=True, check=True)
        for line, answer in zip(result.stdout.splitlines(), pngs):
            cli = json.loads(line)
            self.assertEqual(cli["digit"], answer["digit"])
            for top in cli["top"]:
                self.assertAlmostEqual(top["probability"], answer["probabilities"][top["digit"]],
                                       delta=PROBABILITY_TOLERANCE)

    def test_bad_requests_get_their_status_and_a_json_error(self):
        cases = [
            ("malformed JSON", "/predict", b'{"pixels": [1, 2', "application/json", 400, "not valid JSON"),
            ("too few pixels", "/predict", json.dumps({"pixels": [0] * 783}), "application/json", 400,
             "784 numbers (28 rows of 28), got 783 items"),
            ("too many pixels", "/predict", json.dumps({"pixels": [0] * 785}), "application/json", 400, "got 785"),
            ("a pixel out of range", "/predict", json.dumps({"pixels": [0] * 100 + [256] + [0] * 683}),
             "application/json", 400, '"pixels"[100] must be a number in 0..255, got 256'),
            ("a pixel not a number", "/predict", json.dumps({"pixels": ["a"] * 784}), "application/json", 400,
             '"pixels"[0] must be a number'),
            ("no pixels", "/predict", json.dumps({"image": []}), "application/json", 400, 'no "pixels"'),
            ("nested deep", "/predict", "[" * 100000 + "]" * 100000, "application/json", 400, "nested too deeply"),
            ("not an image", "/predict", b"hello, world", "image/png", 400, "not a PNG, JPEG or PGM image"),
            ("a truncated PNG", "/predict", png_bytes(self.images[0])[:60], "image/png", 400, "the image"),
            ("a blank image", "/predict", png_bytes([255] * 784), "image/png", 400, "no digit"),
            ("text", "/predict", b"7", "text/plain", 415, "Content-Type text/plain: send image/png"),
            ("no content type", "/predict", b"7", None, 415, "no Content-Type"),
            ("a bad invert", "/predict?invert=maybe", png_bytes(self.images[0]), "image/png", 400,
             "invert must be auto, yes or no"),
        ]
        for name, path, body, content_type, status, message in cases:
            with self.subTest(name):
                got, type_, data = request(self.port, "POST", path, body, content_type)
                self.assertEqual(got, status, data[:200])
                self.assertEqual(type_, "application/json")
                self.assertIn(message, json.loads(data)["error"])
                self.assert_alive()
        got, _, data = request(self.port, "GET", "/predict")
        self.assertEqual((got, json.loads(data)["error"][:4]), (405, "POST"))
        got, _, data = request(self.port, "GET", "/nowhere")
        self.assertEqual(got, 404)
        self.assertIn("no such page: /nowhere", json.loads(data)["error"])
        # Random bytes as each image type: refused, never a crash.
        generator = random.Random(int.from_bytes(os.urandom(4), "little"))
        for _ in range(30):
            body = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 3000)))
            for content_type in ("image/png", "image/jpeg", "image/x-portable-graymap"):
                got, _, _ = request(self.port, "POST", "/predict", body, content_type)
                self.assertEqual(got, 400)
        self.assert_alive()

    def test_a_body_over_4_mib_is_413_before_it_is_read(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 4194305\r\n\r\n")
            reply = b""
            while not reply.endswith(b"}"):
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
            reply = reply.decode(errors="replace")
        self.assertTrue(reply.startswith("HTTP/1.1 413"), reply)
        self.assertIn("larger than 4 MiB", reply)
        # Exactly 4 MiB is read (and refused as an image, not for its size).
        got, _, data = request(self.port, "POST", "/predict", b"\0" * (4 << 20), "image/png")
        self.assertEqual(got, 400, data[:200])
        self.assert_alive()

    def test_slow_clients_are_timed_out_and_hold_no_one_up(self):
        slow = []
        for partial in (b"POST /predict HTTP/1.1\r\nHost: x\r\n",  # headers never finished
                        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                        b"\x89PNG"):  # a body that stops
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(partial)
            slow.append(sock)
        started = time.monotonic()
        status, answer = predict(self.port, png_bytes(self.images[0]), "image/png")  # answered meanwhile
        self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - started, 0.9)
        for sock in slow:  # --timeout 1: the server gives up on them and closes
            started = time.monotonic()
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            self.assertLess(time.monotonic() - started, 5)
            self.assertNotIn(b"200 OK", data)
            sock.close()
        self.assert_alive()

    def test_concurrent_requests_are_batched_and_answered_as_one_at_a_time(self):
        bodies = [png_bytes(self.images[i % len(self.images)]) for i in range(200)]
        alone = {}
        for i in range(len(self.images)):
            alone[i] = predict(self.port, bodies[i], "image/png")[1]
        before = json.loads(request(self.port, "GET", "/healthz")[2])
        results = [None] * len(bodies)
        errors = []

        def client(first):
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)  # one kept alive
            try:
                for i in range(first, len(bodies), 20):
                    connection.request("POST", "/predict", body=bodies[i], headers={"Content-Type": "image/png"})
                    response = connection.getresponse()
                    results[i] = (response.status, json.loads(response.read()))
            except Exception as error:  # reported below, with the others
                errors.append(repr(error))
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        for i, (status, answer) in enumerate(results):
            self.assertEqual(status, 200)
            expected = alone[i % len(self.images)]
            self.assertEqual(answer["digit"], expected["digit"])
            for p, q in zip(answer["probabilities"], expected["probabilities"]):
                self.assertAlmostEqual(p, q, delta=PROBABILITY_TOLERANCE)
        after = json.loads(request(self.port, "GET", "/healthz")[2])
        self.assertEqual(after["requests"] - before["requests"], 200)
        self.assertLess(after["batches"] - before["batches"], 200)  # some requests shared a pass
        self.assertGreater(after["largest_batch"], 1)

    def test_the_page_and_the_model(self):
        status, content_type, page = request(self.port, "GET", "/")
        self.assertEqual((status, content_type), (200, "text/html; charset=utf-8"))
        page = page.decode()
        for element in ('id="pad"', 'id="digit"', 'id="bars"', 'id="seen"', 'id="clear"', 'id="upload"'):
            self.assertIn(element, page)
        self.assertNotRegex(page, r"(src|href)=\"(https?:)?//")  # nothing fetched from elsewhere: works offline
        status, _, data = request(self.port, "GET", "/model")
        model = json.loads(data)
        self.assertEqual((model["kind"], model["sizes"], model["dataset"]), ("mlp", [784, 256, 10], "mnist"))
        with open(os.path.join(os.path.dirname(self.model), "report.json")) as file:
            self.assertEqual(model["test_accuracy"], json.load(file)["test"]["accuracy"])


class ServeLifecycle(unittest.TestCase):
    def test_a_fashion_model_names_the_class(self):
        with temporary_directory() as directory:
            out = os.path.join(directory, "fashion")
            # Trained on MNIST's files but as --dataset fashion: the checkpoint says Fashion-MNIST.
            subprocess.run([BINARY, "train", "--device", "cpu", "--dataset", "fashion", "--data-dir", "data/mnist",
                            "--epochs", "1", "--train-subset", "2000", "--hidden", "32", "--no-report", "--out", out],
                           check=True, capture_output=True)
            model = os.path.join(out, "best.ckpt")
            server = Server(model)
            try:
                images, _ = mnist_test_digits(5)
                for i, image in enumerate(images):
                    path = os.path.join(directory, f"{i}.png")
                    with open(path, "wb") as file:
                        file.write(png_bytes(image))
                    status, answer = predict(server.port, png_bytes(image), "image/png")
                    self.assertEqual(status, 200, answer)
                    cli = json.loads(subprocess.run([BINARY, "predict", "--json", "--model", model, path],
                                                    capture_output=True, text=True, check=True).stdout)
                    self.assertEqual((answer["digit"], answer["class"]), (cli["digit"], cli["class"]))
                self.assertEqual(json.loads(request(server.port, "GET", "/model")[2])["dataset"], "fashion")
            finally:
                server.stop()

    def test_sigterm_stops_it_cleanly_and_a_busy_port_is_one_line(self):
        with temporary_directory() as directory:
            model = train_model(directory)
            server = Server(model, "--device", "cpu")
            self.assertRegex(server.first_line, r"^serving 784-256-10 MLP \(.*best.ckpt, test accuracy [0-9.]+%\) on the "
                                                r"CPU at http://127\.0\.0\.1:\d+/")
            busy = subprocess.run([BINARY, "serve", "--model", model, "--port", str(server.port)],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(busy.returncode, 2)
            self.assertRegex(busy.stderr.strip().splitlines()[-1],
                             rf"^mnist: error: cannot listen on 127\.0\.0\.1:{server.port} .*choose another --port")
            request(server.port, "GET", "/healthz")
            status, stderr = server.stop()
            self.assertEqual(status, 0, stderr)
            self.assertIn("GET /healthz 200", stderr)  # one line per request: method, path, status, ms
            self.assertRegex(stderr, r"GET /healthz 200 [0-9.]+ ms\n")
            self.assertIn("mnist serve: stopped by Terminated", stderr)
            missing = subprocess.run([BINARY, "serve", "--model", os.path.join(directory, "none.ckpt")],
                                     capture_output=True, text=True, timeout=60)
            self.assertEqual(missing.returncode, 1)
            self.assertEqual(len(missing.stderr.strip().splitlines()), 1, missing.stderr)


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    unittest.main(verbosity=2)
