#!/usr/bin/env python3
"""The page of `mnist serve` in a real browser: headless Chromium, driven by Selenium, draws a 1
and a 7 as mouse strokes on the canvas and reads the page's answer; a screenshot is kept in
$MNIST_ARTIFACTS (serve-page.png). If Chromium cannot start, the test fails and says why."""
import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, temporary_directory, train_model  # noqa: E402

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    SELENIUM = None
except ImportError as error:  # reported by the test, not skipped
    SELENIUM = error

ARTIFACTS = os.environ.get("MNIST_ARTIFACTS", os.path.join("build", "artifacts"))


def start_browser():
    if SELENIUM is not None:
        raise AssertionError(f"python3-selenium is missing ({SELENIUM}); apt-get install python3-selenium "
                             "(bash .ci/setup --tests does)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise AssertionError("Chromium or its driver is missing; apt-get install chromium chromium-driver "
                             "(bash .ci/setup --tests does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=900,760", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(service=Service(executable_path=driver), options=options)
    except Exception as error:
        raise AssertionError(f"Chromium did not start: {str(error).strip().splitlines()[0]}")


def stroke(browser, pad, points):
    """One mouse stroke through points given in canvas pixels (280×280), from its top-left."""
    scale = pad.size["width"] / 280.0
    # Selenium 4 measures offsets from the element's centre.
    at = [(round((x - 140) * scale), round((y - 140) * scale)) for x, y in points]
    actions = ActionChains(browser, duration=10)
    actions.move_to_element_with_offset(pad, *at[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(at, at[1:]):
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) / 8))
        for k in range(1, steps + 1):
            actions.move_to_element_with_offset(pad, x0 + (x1 - x0) * k // steps, y0 + (y1 - y0) * k // steps)
    actions.release().perform()


def answer_after(browser, action):
    """Runs action (a stroke), then waits for the page's new answer: the digit it shows."""
    browser.execute_script("document.getElementById('digit').dataset.digit = '';"
                           "document.getElementById('status').textContent = 'waiting';")
    action()
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "digit").get_attribute("data-digit") not in (None, "")
        or b.find_element(By.ID, "status").text not in ("waiting", "reading…"))
    return browser.find_element(By.ID, "digit").get_attribute("data-digit"), browser.find_element(By.ID, "status").text


class ServePage(unittest.TestCase):
    def test_drawn_digits_are_read_on_the_page(self):
        with temporary_directory() as directory:
            model = train_model(directory)
            server = Server(model)
            browser = None
            try:
                browser = start_browser()
                browser.get(server.url + "/")
                WebDriverWait(browser, 20).until(lambda b: "MLP" in b.find_element(By.ID, "model").text)
                self.assertIn("784-256-10 MLP", browser.find_element(By.ID, "model").text)
                pad = browser.find_element(By.ID, "pad")

                one, status = answer_after(browser, lambda: stroke(browser, pad, [(150, 40), (140, 240)]))
                self.assertEqual(one, "1", status)
                bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
                self.assertEqual(len(bars), 10)
                self.assertIn("top", bars[1].get_attribute("class"))

                browser.find_element(By.ID, "clear").click()
                self.assertEqual(browser.find_element(By.ID, "digit").text, "")
                seven, status = answer_after(browser, lambda: stroke(browser, pad, [(70, 50), (210, 50), (120, 240)]))
                self.assertEqual(seven, "7", status)
                # The 28×28 the model saw is drawn: its canvas is no longer blank.
                lit = browser.execute_script(
                    "const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;"
                    "let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] > 128; return n;")
                self.assertGreater(lit, 20)
                time.sleep(0.5)  # the bars' width transition ends before the picture is taken
                os.makedirs(ARTIFACTS, exist_ok=True)
                browser.save_screenshot(os.path.join(ARTIFACTS, "serve-page.png"))

                # On a phone's width (390 CSS pixels) nothing runs off the side, and the pad fits.
                browser.set_window_size(390, 844)
                browser.get(server.url + "/")
                WebDriverWait(browser, 20).until(lambda b: "MLP" in b.find_element(By.ID, "model").text)
                overflow = browser.execute_script(
                    "return [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                    " document.getElementById('pad').getBoundingClientRect().right];")
                self.assertLessEqual(overflow[0], overflow[1], overflow)
                self.assertLessEqual(overflow[2], overflow[1], overflow)
                pad = browser.find_element(By.ID, "pad")
                one, status = answer_after(browser, lambda: stroke(browser, pad, [(150, 40), (140, 240)]))
                self.assertEqual(one, "1", status)
                browser.save_screenshot(os.path.join(ARTIFACTS, "serve-page-phone.png"))
            finally:
                if browser is not None:
                    browser.quit()
                server.stop()


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    unittest.main(verbosity=2)
