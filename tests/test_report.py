#!/usr/bin/python3
"""Checks host/cli/report.py on the committed run directory tests/data/run_fixture.

Runs the script with this interpreter (CMake registers it as the `report_script` test, run by
/usr/bin/python3 where Debian's python3-matplotlib lives) on temporary copies of the fixture,
and checks the pictures, the numbers in report.md against values computed here from the
confusion matrix, and the one-line errors. Prints `N passed, M failed`; exit status 1 on any
failure.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "host", "cli", "report.py")
FIXTURE = os.path.join(ROOT, "tests", "data", "run_fixture")
PICTURES = ("curves.png", "confusion.png", "errors.png")


def run_report(run_dir):
    return subprocess.run([sys.executable, SCRIPT, run_dir], capture_output=True, text=True, timeout=300)


def copy_fixture(parent, name="run"):
    run_dir = os.path.join(parent, name)
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def png_size(path):
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    assert head[12:16] == b"IHDR", f"{path}: no IHDR chunk first"
    return struct.unpack(">II", head[16:24])


def check_picture(path, min_bytes=10_000, min_width=400, min_height=200):
    assert os.path.isfile(path), f"{path} not written"
    size = os.path.getsize(path)
    assert size > min_bytes, f"{path}: only {size} bytes"
    width, height = png_size(path)
    assert width >= min_width and height >= min_height, f"{path}: {width}x{height} px"


def check_succeeded(result):
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr.strip()}"
    assert "Traceback" not in result.stderr, result.stderr


def check_one_line_failure(result, names):
    assert result.returncode == 1, f"exit {result.returncode}, expected 1 (stderr: {result.stderr!r})"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {result.stderr!r}"
    assert lines[0].startswith("report: "), lines[0]
    assert names in lines[0], f"{lines[0]!r} does not name {names}"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- values computed here, independently of the script ------------------------------------

def fixture_report():
    return json.loads(read(os.path.join(FIXTURE, "report.json")))


def per_class_from_confusion(confusion):
    """[(support, precision, recall, f1)] per digit, from rows = true, columns = predicted."""
    out = []
    for c in range(10):
        hits = confusion[c][c]
        support = sum(confusion[c])
        predicted = sum(confusion[r][c] for r in range(10))
        precision, recall = hits / predicted, hits / support
        out.append((support, precision, recall, 2 * precision * recall / (precision + recall)))
    return out


# --- the tests ----------------------------------------------------------------------------

_fixture_run = {}


def fixture_run():
    """The fixture copied and reported once, shared by the tests that only read the results."""
    if "dir" not in _fixture_run:
        _fixture_run["tmp"] = tempfile.TemporaryDirectory(prefix="test_report.")
        _fixture_run["dir"] = copy_fixture(_fixture_run["tmp"].name)
        _fixture_run["result"] = run_report(_fixture_run["dir"])
    check_succeeded(_fixture_run["result"])
    return _fixture_run["dir"]


def test_fixture_pictures(tmp):
    run_dir = fixture_run()
    for name in PICTURES:
        check_picture(os.path.join(run_dir, name))
    leftovers = [n for n in os.listdir(run_dir) if ".tmp" in n]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_fixture_markdown(tmp):
    run_dir = fixture_run()
    md = read(os.path.join(run_dir, "report.md"))
    test = fixture_report()["test"]
    confusion = test["confusion"]
    correct = sum(confusion[i][i] for i in range(10))
    total = sum(map(sum, confusion))
    assert f"{100 * correct / total:.2f}%" == "98.72%"  # the fixture is what this test expects
    assert f"| test accuracy | 98.72% ({correct:,} of {total:,}) |" in md, "test accuracy row"
    assert f"| test loss | {test['loss']:.4f} |" in md, "test loss row"
    assert "| train loss (epoch 3) | 0.0761 |" in md, "last epoch train loss"
    assert "| validation accuracy (epoch 3) | 97.57% |" in md, "last epoch validation accuracy"
    for digit, (support, precision, recall, f1) in enumerate(per_class_from_confusion(confusion)):
        row = f"| {digit} | {support:,} | {precision:.4f} | {recall:.4f} | {f1:.4f} |"
        assert row in md, f"per-class row {row!r} missing"
    # Digit 9 by hand: 992 right of 1,009; 1,013 predicted as 9 (14+5+2+992).
    assert "| 9 | 1,009 | 0.9793 | 0.9832 | 0.9812 |" in md
    off_diagonal = [(confusion[t][p], t, p) for t in range(10) for p in range(10) if t != p]
    count, true_digit, predicted = max(off_diagonal)
    assert (count, true_digit, predicted) == (14, 4, 9)
    assert f"| {true_digit} | {predicted} | {count} | 1.43% |" in md, "top confused pair"
    for name in PICTURES:
        assert f"]({name})" in md, f"{name} not embedded"
    assert "| hidden | 512,512 |" in md and "| optimizer | adam |" in md, "configuration table"
    assert "| digit | support | precision | recall | F1 |" in md and "## Misclassified digits" in md, \
        "MNIST's classes are digits"


def test_rerun_is_identical(tmp):
    run_dir = copy_fixture(tmp)
    shutil.copytree(fixture_run(), run_dir, dirs_exist_ok=True)
    first = {name: read_bytes(os.path.join(run_dir, name)) for name in PICTURES + ("report.md",)}
    check_succeeded(run_report(run_dir))
    for name, data in first.items():
        assert read_bytes(os.path.join(run_dir, name)) == data, f"{name} differs on a second run"


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_one_epoch_no_validation_no_errors(tmp):
    run_dir = copy_fixture(tmp)
    epoch = {"epoch": 1, "train_loss": 0.3, "train_accuracy": 0.91, "val_loss": None,
             "val_accuracy": None, "seconds": 4.0}
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps(epoch) + "\n")
    with open(os.path.join(run_dir, "errors.json"), "w") as f:
        json.dump({"dataset": "mnist", "errors": []}, f)
    check_succeeded(run_report(run_dir))
    check_picture(os.path.join(run_dir, "curves.png"))
    check_picture(os.path.join(run_dir, "errors.png"), min_bytes=3_000)  # the placeholder
    md = read(os.path.join(run_dir, "report.md"))
    assert "| validation loss (epoch 1) | — |" in md, "a null validation loss shows as —"


def test_without_errors_json(tmp):
    run_dir = copy_fixture(tmp)
    os.remove(os.path.join(run_dir, "errors.json"))
    check_succeeded(run_report(run_dir))
    assert not os.path.exists(os.path.join(run_dir, "errors.png"))
    assert "no errors.json" in read(os.path.join(run_dir, "report.md"))


def test_missing_report_json(tmp):
    run_dir = copy_fixture(tmp)
    os.remove(os.path.join(run_dir, "report.json"))
    check_one_line_failure(run_report(run_dir), os.path.join(run_dir, "report.json"))
    assert not os.path.exists(os.path.join(run_dir, "report.md"))


def test_missing_metrics_jsonl(tmp):
    run_dir = copy_fixture(tmp)
    os.remove(os.path.join(run_dir, "metrics.jsonl"))
    check_one_line_failure(run_report(run_dir), os.path.join(run_dir, "metrics.jsonl"))


def test_malformed_json(tmp):
    run_dir = copy_fixture(tmp, "report")
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        f.write('{"test": {"accuracy": 0.98,')
    check_one_line_failure(run_report(run_dir), "report.json: malformed JSON")
    run_dir = copy_fixture(tmp, "metrics")
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write("{epoch: 4}\n")
    check_one_line_failure(run_report(run_dir), "metrics.jsonl: line 4: malformed JSON")
    run_dir = copy_fixture(tmp, "errors")
    with open(os.path.join(run_dir, "errors.json"), "w") as f:
        f.write('{"errors": [')
    check_one_line_failure(run_report(run_dir), "errors.json: malformed JSON")


def test_wrong_shape(tmp):
    run_dir = copy_fixture(tmp)
    report = fixture_report()
    report["test"]["confusion"] = report["test"]["confusion"][:9]
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_one_line_failure(run_report(run_dir), "test.confusion")


def test_numbers_json_allows_but_mnist_never_writes(tmp):
    """NaN, Infinity and 1e999 parse in Python, and so does an integer no float holds: each is
    a one-line error naming its field, not a traceback from int() or float()."""
    def edit_report(report, value):
        report["test"]["per_class"][3]["support"] = value

    def edit_confusion(report, value):
        report["test"]["confusion"][2][5] = value

    cases = [("nan", edit_report, float("nan"), "test.per_class[3].support"),
             ("inf", edit_report, float("inf"), "test.per_class[3].support"),
             ("huge", edit_report, 10 ** 400, "test.per_class[3].support"),
             ("confusion", edit_confusion, float("-inf"), "test.confusion")]
    for name, edit, value, field_name in cases:
        run_dir = copy_fixture(tmp, name)
        report = fixture_report()
        edit(report, value)
        with open(os.path.join(run_dir, "report.json"), "w") as f:
            json.dump(report, f)  # writes NaN / Infinity / the 401 digits as they are
        check_one_line_failure(run_report(run_dir), field_name)
    run_dir = copy_fixture(tmp, "metrics")
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write('{"epoch": 1e999}\n')
    check_one_line_failure(run_report(run_dir), "metrics.jsonl: line 4: epoch")
    run_dir = copy_fixture(tmp, "pixels")
    errors = json.loads(read(os.path.join(FIXTURE, "errors.json")))
    errors["errors"][0]["pixels"][17] = float("nan")
    with open(os.path.join(run_dir, "errors.json"), "w") as f:
        json.dump(errors, f)
    check_one_line_failure(run_report(run_dir), "errors[0].pixels")
    run_dir = copy_fixture(tmp, "nested")
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        f.write("[" * 100_000)
    check_one_line_failure(run_report(run_dir), "report.json: malformed JSON (nested too deeply)")


def test_control_characters_stay_out_of_report_md(tmp):
    run_dir = copy_fixture(tmp)
    report = fixture_report()
    report["config"]["data_dir"] = "data/\x1b[2Jmn\rist\u202e\n|x"  # escape code, CR, bidi override, LF
    report["device"] = "GPU \x07bell"
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_succeeded(run_report(run_dir))
    md = read(os.path.join(run_dir, "report.md"))
    for c in ("\x1b", "\r", "\u202e", "\x07"):
        assert c not in md, f"{c!r} reached report.md"
    assert "| data_dir | data/ [2Jmn ist  \\|x |" in md, "the config row, its control characters as spaces"


def test_versions_table_only_when_recorded(tmp):
    md = read(os.path.join(fixture_run(), "report.md"))
    assert "## Versions" not in md, "the fixture records no versions, so report.md must show none"
    run_dir = copy_fixture(tmp)
    report = fixture_report()
    report["versions"] = {"cudnn": "9.1.2", "cuda_driver": "none", "openblas": "0.3.\x1b21"}
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_succeeded(run_report(run_dir))
    md = read(os.path.join(run_dir, "report.md"))
    assert "## Versions" in md, "no Versions section"
    for row in ("| cudnn | 9.1.2 |", "| cuda_driver | none |", "| openblas | 0.3. 21 |"):
        assert row in md, f"row {row!r} missing"


def test_checkpoint_stall_only_when_recorded(tmp):
    md = read(os.path.join(fixture_run(), "report.md"))
    assert "12.3 s of training." in md, "the fixture records no checkpoint stall, so none is shown"
    run_dir = copy_fixture(tmp)
    report = fixture_report()
    report["timings"]["checkpoint_stall_seconds"] = 0.0042
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_succeeded(run_report(run_dir))
    md = read(os.path.join(run_dir, "report.md"))
    assert "12.3 s of training (0.004 s of it waiting for checkpoints)." in md, "no checkpoint stall in the summary"


def test_schedule_and_early_stop_only_when_recorded(tmp):
    md = read(os.path.join(fixture_run(), "report.md"))
    assert "learning rate" not in md and "Stopped early" not in md, "the fixture records neither"
    run_dir = copy_fixture(tmp)
    path = os.path.join(run_dir, "metrics.jsonl")
    with open(path) as f:
        epochs = [json.loads(line) for line in f if line.strip()]
    for e, lr in zip(epochs, (0.001, 0.0005, 0.00025)):
        e["lr"] = lr
    with open(path, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in epochs)
    report = fixture_report()
    report["early_stop"] = {"patience": 2, "stopped_after_epoch": 3, "best_epoch": 1}
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_succeeded(run_report(run_dir))
    md = read(os.path.join(run_dir, "report.md"))
    assert "| epoch | train loss | train accuracy | val loss | val accuracy | seconds | learning rate |" in md, md
    assert "| 0.00025 |" in md, "the third epoch's rate"
    assert "Stopped early after epoch 3 of " in md and "the best was epoch 1, in best.ckpt." in md, md
    check_picture(os.path.join(run_dir, "curves.png"))


def test_named_classes(tmp):
    """A report.json that names its classes (Fashion-MNIST's) gets them in report.md and the
    pictures; a name that is not a string is a one-line error."""
    run_dir = copy_fixture(tmp)
    report = fixture_report()
    names = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
             "ankle boot"]
    names[3] = "$dre\x1bss$"   # mathtext markers and an escape code: drawn and written as plain text
    names[5] = "s" * 40          # cut short
    for c, row in enumerate(report["test"]["per_class"]):
        row["name"] = names[c]
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_succeeded(run_report(run_dir))
    for name in PICTURES:
        check_picture(os.path.join(run_dir, name))
    md = read(os.path.join(run_dir, "report.md"))
    confusion = report["test"]["confusion"]
    support, precision, recall, f1 = per_class_from_confusion(confusion)[9]
    assert f"| 9 ankle boot | {support:,} | {precision:.4f} | {recall:.4f} | {f1:.4f} |" in md, "named per-class row"
    assert "| class | support | precision | recall | F1 |" in md, "per-class header says class"
    assert "| 3 $dre ss$ |" in md, "the escape code as a space"
    assert "| 5 " + "s" * 23 + "… |" in md, "a long name cut short"
    assert "| 4 coat | 9 ankle boot | 14 | 1.43% |" in md, "top confused pair, named"
    assert "| true class | predicted | count | share of the true class |" in md
    assert "## Misclassified images" in md and "digit" not in md.split("## Configuration")[0], \
        "a named dataset's report speaks of classes and images, not digits"

    report["test"]["per_class"][2]["name"] = 7
    run_dir = copy_fixture(tmp, "bad-name")
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_one_line_failure(run_report(run_dir), "test.per_class[2].name")


def test_stdout_that_cannot_be_written(tmp):
    """A full disk under stdout, or stdout closed: the report is drawn, and the one line on
    stderr says the path could not be printed (exit 3), instead of a traceback or a silent 0."""
    for name, kwargs in (("full", {"stdout": "/dev/full"}), ("closed", {"preexec_fn": lambda: os.close(1)})):
        run_dir = copy_fixture(tmp, name)
        if "stdout" in kwargs:
            with open(kwargs["stdout"], "w") as full:
                result = subprocess.run([sys.executable, SCRIPT, run_dir], stdout=full, stderr=subprocess.PIPE,
                                        text=True, timeout=300)
        else:
            result = subprocess.run([sys.executable, SCRIPT, run_dir], stderr=subprocess.PIPE, text=True,
                                    timeout=300, **kwargs)
        assert result.returncode == 3, f"{name}: exit {result.returncode}, expected 3 ({result.stderr!r})"
        result.returncode = 1  # for the one-line check
        check_one_line_failure(result, "writing to standard output failed")
        assert os.path.isfile(os.path.join(run_dir, "report.md")), f"{name}: report.md not drawn"


def test_files_mnist_never_writes(tmp):
    """More misclassified images than errors.json ever holds, and a count past any image count:
    one line naming the field, not matplotlib's or math's exception."""
    run_dir = copy_fixture(tmp, "errors")
    errors = json.loads(read(os.path.join(FIXTURE, "errors.json")))
    errors["errors"] = (errors["errors"] * 37)[:37]
    with open(os.path.join(run_dir, "errors.json"), "w") as f:
        json.dump(errors, f)
    check_one_line_failure(run_report(run_dir), "errors.json: \"errors\" holds 37 images; mnist writes at most 36")
    run_dir = copy_fixture(tmp, "count")
    report = fixture_report()
    report["test"]["confusion"][0][0] = 2 ** 64
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f)
    check_one_line_failure(run_report(run_dir), "test.confusion")


def main():
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, test in tests:
        with tempfile.TemporaryDirectory(prefix="test_report.") as tmp:
            try:
                test(tmp)
            except Exception:
                failed += 1
                print(f"FAIL {name}")
                traceback.print_exc()
            else:
                passed += 1
                print(f"ok   {name}")
    if "tmp" in _fixture_run:
        _fixture_run["tmp"].cleanup()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
