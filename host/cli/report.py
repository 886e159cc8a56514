#!/usr/bin/python3
"""Turn a finished run directory into pictures and a Markdown report.

    report.py RUN_DIR

Reads RUN_DIR/metrics.jsonl and RUN_DIR/report.json (both required) and RUN_DIR/errors.json
(optional: runs from before it existed have none) and writes, each atomically:

    curves.png     loss and accuracy per epoch, train and validation
    confusion.png  the test confusion matrix (true class on rows, predicted on columns)
    errors.png     the most confidently misclassified test images (only with errors.json)
    report.md      configuration, final metrics, per-class precision/recall/F1, the
                   most-confused pairs, the three pictures, and the library versions

Classes are digits, or, where report.json names them (test.per_class[].name: Fashion-MNIST),
numbered names ("9 ankle boot").

Needs numpy and matplotlib (Debian: python3-numpy python3-matplotlib; run it with
/usr/bin/python3). Any problem with the inputs is one line on stderr and exit status 1; exit
status 3 means the report was drawn but its path could not be printed (stdout full or closed).
"""

import json
import math
import os
import sys
import unicodedata

PROGRAM = "report"
CLASSES = 10
IMAGE_SIDE = 28
DPI = 120
MAX_ERRORS = 36      # the most errors.json holds (kReportedErrors, include/mnist/train/misclassified.h): a 6x6 grid
DRAWN_NOT_PRINTED = 3  # the exit status when only printing the path failed (kReportDrawnButNotPrinted)
MAX_COUNT = 2 ** 53  # a count of images past this is not one (and past float's exact integers)


class ReportError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


# --- reading the run directory ------------------------------------------------------------

def read_text(path, hint=""):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ReportError(f"{path} not found{hint}") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ReportError(f"cannot read {path}: {reason}") from None


def parse_json(path, text, line=None):
    where = f"line {line}: " if line is not None else ""
    try:
        return json.loads(text)
    except ValueError as e:
        raise ReportError(f"{path}: {where}malformed JSON ({e})") from None
    except RecursionError:
        raise ReportError(f"{path}: {where}malformed JSON (nested too deeply)") from None


def is_number(x):
    """A finite JSON number. Python's json reads NaN, Infinity and 1e999 (as inf), and an
    integer too large for a float, none of which mnist writes."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def shown(value):
    """A value from the file as a message quotes it: repr (which escapes control characters),
    cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def number(path, value, what, allow_null=False):
    if value is None and allow_null:
        return None
    if not is_number(value):
        raise ReportError(f"{path}: {what} must be a finite number{' or null' if allow_null else ''}, "
                          f"got {shown(value)}")
    return float(value)


def field(path, obj, key, where):
    if not isinstance(obj, dict) or key not in obj:
        raise ReportError(f"{path}: missing \"{where}{key}\"")
    return obj[key]


def optional_name(path, row, where):
    """A class's name, or None where report.json gives none (MNIST's digits, older runs)."""
    name = row.get("name")
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ReportError(f"{path}: {where}name must be a non-empty string, got {shown(name)}")
    # Control and format characters (line breaks, escape codes) become spaces, and a page of
    # text is cut short: the name is a caption.
    name = "".join(" " if unicodedata.category(c).startswith("C") else c for c in name).strip()
    return name if len(name) <= 24 else name[:23] + "…"


def read_epochs(run_dir):
    """metrics.jsonl: one JSON object per epoch; null metrics become NaN."""
    path = os.path.join(run_dir, "metrics.jsonl")
    epochs = []
    for n, line in enumerate(read_text(path, " (is this a run directory?)").splitlines(), start=1):
        if not line.strip():
            continue
        row = parse_json(path, line, n)
        if not isinstance(row, dict):
            raise ReportError(f"{path}: line {n}: expected a JSON object")
        epoch = {"epoch": int(number(path, field(path, row, "epoch", f"line {n}: "), f"line {n}: epoch"))}
        # lr: the learning rate of the epoch's last step (runs from before schedules have none).
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "lr"):
            value = number(path, row.get(key), f"line {n}: {key}", allow_null=True)
            epoch[key] = math.nan if value is None else value
        epochs.append(epoch)
    return epochs


def read_report(run_dir):
    """report.json, checked for the fields this script uses."""
    path = os.path.join(run_dir, "report.json")
    report = parse_json(path, read_text(path, " (was the run finished?)"))
    if not isinstance(report, dict):
        raise ReportError(f"{path}: expected a JSON object")
    config = report.get("config", {})
    if not isinstance(config, dict):
        raise ReportError(f"{path}: \"config\" must be an object")
    test = field(path, report, "test", "")
    out = {
        "config": config,
        "device": str(report.get("device", "unknown")),
        "train_seconds": None,
        "checkpoint_stall_seconds": None,
        "accuracy": number(path, field(path, test, "accuracy", "test."), "test.accuracy"),
        "loss": number(path, field(path, test, "loss", "test."), "test.loss", allow_null=True),
        "count": int(number(path, field(path, test, "count", "test."), "test.count")),
    }
    timings = report.get("timings")
    if isinstance(timings, dict) and is_number(timings.get("train_seconds")):
        out["train_seconds"] = float(timings["train_seconds"])
    # Optional: how long the training loop waited for its checkpoints; older runs have none.
    if isinstance(timings, dict) and is_number(timings.get("checkpoint_stall_seconds")):
        out["checkpoint_stall_seconds"] = float(timings["checkpoint_stall_seconds"])
    # Optional: where --early-stop ended the run (null or absent: it ran all its epochs).
    early = report.get("early_stop")
    out["early_stop"] = None
    if isinstance(early, dict) and all(is_number(early.get(k)) for k in ("patience", "stopped_after_epoch",
                                                                        "best_epoch")):
        out["early_stop"] = {k: int(early[k]) for k in ("patience", "stopped_after_epoch", "best_epoch")}
    # Optional: runs from before report.json recorded them have none.
    versions = report.get("versions", {})
    out["versions"] = versions if isinstance(versions, dict) else {}

    confusion = field(path, test, "confusion", "test.")
    if (not isinstance(confusion, list) or len(confusion) != CLASSES
            or any(not isinstance(row, list) or len(row) != CLASSES for row in confusion)
            or any(not is_number(x) or not 0 <= x <= MAX_COUNT for row in confusion for x in row)):
        raise ReportError(f"{path}: \"test.confusion\" must be a {CLASSES}x{CLASSES} array of counts")
    out["confusion"] = [[int(x) for x in row] for row in confusion]

    per_class = field(path, test, "per_class", "test.")
    if not isinstance(per_class, list) or len(per_class) != CLASSES:
        raise ReportError(f"{path}: \"test.per_class\" must be a list of {CLASSES} objects")
    out["per_class"] = []
    for i, row in enumerate(per_class):
        where = f"test.per_class[{i}]."
        out["per_class"].append({
            "class": int(number(path, field(path, row, "class", where), where + "class")),
            "support": int(number(path, field(path, row, "support", where), where + "support")),
            "precision": number(path, field(path, row, "precision", where), where + "precision", allow_null=True),
            "recall": number(path, field(path, row, "recall", where), where + "recall", allow_null=True),
            "name": optional_name(path, row, where),
        })

    pairs = test.get("most_confused", [])
    if not isinstance(pairs, list):
        raise ReportError(f"{path}: \"test.most_confused\" must be a list")
    out["most_confused"] = []
    for i, pair in enumerate(pairs):
        where = f"test.most_confused[{i}]."
        out["most_confused"].append({key: int(number(path, field(path, pair, key, where), where + key))
                                     for key in ("true", "predicted", "count")})
    return out


def read_errors(run_dir):
    """errors.json, or None when the run has none (runs from before it was written)."""
    path = os.path.join(run_dir, "errors.json")
    if not os.path.exists(path):
        return None
    doc = parse_json(path, read_text(path))
    errors = field(path, doc, "errors", "")
    if not isinstance(errors, list):
        raise ReportError(f"{path}: \"errors\" must be a list")
    if len(errors) > MAX_ERRORS:
        raise ReportError(f"{path}: \"errors\" holds {len(errors)} images; mnist writes at most {MAX_ERRORS}")
    out = []
    for i, e in enumerate(errors):
        where = f"errors[{i}]."
        pixels = field(path, e, "pixels", where)
        if (not isinstance(pixels, list) or len(pixels) != IMAGE_SIDE * IMAGE_SIDE
                or any(not is_number(p) for p in pixels)):
            raise ReportError(f"{path}: \"{where}pixels\" must be {IMAGE_SIDE * IMAGE_SIDE} numbers")
        out.append({
            "index": int(number(path, field(path, e, "index", where), where + "index")),
            "true": int(number(path, field(path, e, "true", where), where + "true")),
            "predicted": int(number(path, field(path, e, "predicted", where), where + "predicted")),
            "probability": number(path, field(path, e, "probability", where), where + "probability"),
            "pixels": pixels,
        })
    return {"dataset": str(doc.get("dataset", "mnist")), "errors": out}


class Classes:
    """How the report names the classes: digits ("4"), or numbered names ("4 coat") and the
    bare names ("coat") in the captions of a dataset with names."""

    def __init__(self, report):
        by_class = {c["class"]: c["name"] for c in report["per_class"]}
        self.names = [by_class.get(c) for c in range(CLASSES)]
        self.named = any(self.names)
        self.noun = "class" if self.named else "digit"
        self.images = "images" if self.named else "digits"

    def name(self, c):
        return self.names[c] if 0 <= c < CLASSES else None

    def label(self, c):
        """Row and column labels: '4 coat', or '4'."""
        return f"{c} {self.name(c)}" if self.name(c) else str(c)

    def short(self, c):
        """Captions of the mistakes: 'coat', or '4'."""
        return self.name(c) or str(c)


def plot_text(text):
    """Text for matplotlib as it is: a '$' would otherwise start mathtext."""
    return text.replace("$", r"\$")


# --- writing ------------------------------------------------------------------------------

def temporary_path(path):
    return f"{path}.tmp.{os.getpid()}"


def write_atomically(path, write):
    """Calls write(temporary) and renames the temporary file to `path` once it is on disk; on any
    failure the temporary file is removed and `path` is left as it was."""
    temporary = temporary_path(path)
    try:
        write(temporary)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as e:  # KeyboardInterrupt too: no temporary file is left behind
        try:
            os.remove(temporary)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ReportError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def write_text(path, text):
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
    write_atomically(path, write)


def save_figure(figure, path):
    # No timestamps or version in the PNG: the same run gives the same bytes.
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI,
                                                             metadata={"Software": None}))


# --- pictures -----------------------------------------------------------------------------

def new_figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


def has_schedule(epochs):
    """Whether the epochs record learning rates that changed (a schedule, or a warm-up)."""
    rates = {e["lr"] for e in epochs if not math.isnan(e["lr"])}
    return len(rates) > 1


def plot_curves(epochs, path):
    import numpy as np
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    scheduled = has_schedule(epochs)
    figure = new_figure(16 if scheduled else 11, 4.2)
    if scheduled:
        loss_axes, accuracy_axes, lr_axes = figure.subplots(1, 3)
        x = [e["epoch"] for e in epochs]
        lr_axes.plot(x, [e["lr"] for e in epochs], color="tab:green", marker="o", markersize=5, linewidth=2)
        lr_axes.set_xlabel("epoch")
        lr_axes.set_ylabel("learning rate")
        lr_axes.set_title("learning rate (the epoch's last step)")
        lr_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        lr_axes.grid(True, alpha=0.3)
    else:
        loss_axes, accuracy_axes = figure.subplots(1, 2)
    x = np.array([e["epoch"] for e in epochs], dtype=float)
    panels = ((loss_axes, "loss", "loss (cross-entropy)"), (accuracy_axes, "accuracy", "accuracy"))
    for axes, metric, label in panels:
        drawn = False
        for split, colour, marker in (("train", "tab:blue", "o"), ("val", "tab:orange", "s")):
            y = np.array([e[f"{split}_{metric}"] for e in epochs], dtype=float)
            if len(y) and not np.all(np.isnan(y)):
                axes.plot(x, y, color=colour, marker=marker, markersize=5, linewidth=2,
                          label="train" if split == "train" else "validation")
                drawn = True
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_title(f"{metric} per epoch")
        if 0 < len(x) <= 12:
            axes.set_xticks(x)  # every epoch, also the lone one of a 1-epoch run
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(x):
            low, high = x.min(), x.max()
            pad = 0.5 if low == high else 0.03 * (high - low)
            axes.set_xlim(low - pad, high + pad)
        if metric == "accuracy":
            axes.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
        axes.grid(True, alpha=0.3)
        if drawn:
            axes.legend(loc="upper right" if metric == "loss" else "lower right")
        else:
            axes.text(0.5, 0.5, "no epochs recorded", transform=axes.transAxes,
                      ha="center", va="center", fontsize=14, color="0.4")
    if epochs and all(math.isnan(e["val_loss"]) and math.isnan(e["val_accuracy"]) for e in epochs):
        figure.suptitle("training curves (no validation split)")
    save_figure(figure, path)


def plot_confusion(report, classes, path):
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    counts = np.array(report["confusion"], dtype=float)
    figure = new_figure(8, 7)
    axes = figure.subplots()
    # Log colours: the diagonal holds ~1000 per cell and the mistakes a handful, so a linear
    # scale would paint every mistake white. Empty cells are left white.
    shown = np.ma.masked_less(counts, 1)
    cmap = _colormap("Blues")
    cmap.set_bad("white")
    image = axes.imshow(shown, cmap=cmap, norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)))
    colorbar = figure.colorbar(image, ax=axes, shrink=0.85)
    colorbar.set_label("count (log scale)")
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    for t in range(CLASSES):
        for p in range(CLASSES):
            n = int(counts[t, p])
            if n == 0:
                colour = "0.7"
            else:
                r, g, b, _ = cmap(image.norm(n))
                colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            axes.text(p, t, str(n), ha="center", va="center", color=colour,
                      fontsize=9, fontweight="bold" if t == p else "normal")
    labels = [plot_text(classes.label(c)) for c in range(CLASSES)]
    axes.set_xticks(range(CLASSES), labels, rotation=35 if classes.named else 0,
                    ha="right" if classes.named else "center", rotation_mode="anchor")
    axes.set_yticks(range(CLASSES), labels)
    axes.set_xlabel(f"predicted {classes.noun}")
    axes.set_ylabel(f"true {classes.noun}")
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    correct = int(np.trace(counts))
    axes.set_title(f"test set: accuracy {100 * report['accuracy']:.2f}% "
                   f"({correct:,} of {int(counts.sum()):,} correct)")
    save_figure(figure, path)


def _colormap(name):
    import matplotlib
    return matplotlib.colormaps[name].copy()


def plot_errors(errors, classes, path):
    import numpy as np

    n = len(errors)
    if n == 0:
        figure = new_figure(6, 3)
        figure.text(0.5, 0.5, f"no misclassified {classes.images}", ha="center", va="center", fontsize=20)
        save_figure(figure, path)
        return
    columns = min(6, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    # Named classes take two caption lines ("ankle boot" over "→ sneaker  p=0.97").
    cell_width, cell_height = 1.55, 2.1 if classes.named else 1.85
    figure = new_figure(max(columns * cell_width, 5.0), rows * cell_height + 0.6)
    grid = figure.subplots(rows, columns, squeeze=False)
    for i, axes in enumerate(grid.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if i >= n:
            axes.set_axis_off()
            continue
        e = errors[i]
        pixels = np.array(e["pixels"], dtype=float).reshape(IMAGE_SIDE, IMAGE_SIDE)
        axes.imshow(pixels, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        if classes.named:
            caption = f"{classes.short(e['true'])}\n→ {classes.short(e['predicted'])}  p={e['probability']:.2f}"
            axes.set_title(plot_text(caption), fontsize=8.5, pad=3)
        else:
            axes.set_title(f"{e['true']}→{e['predicted']}  p={e['probability']:.2f}", fontsize=11, pad=3)
        axes.set_xlabel(f"test #{e['index']}", fontsize=8, color="0.4", labelpad=2)
        for spine in axes.spines.values():
            spine.set_color("0.75")
    what = "the most confident mistake" if n == 1 else f"the {n} most confident mistakes"
    figure.suptitle(f"{what} on the test set\n"
                    "caption: true→predicted, p = probability of the prediction", fontsize=11)
    save_figure(figure, path)


# --- report.md ----------------------------------------------------------------------------

def markdown_cell(value):
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list) and all(is_number(v) for v in value):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value)
    elif value is None:
        text = "—"
    else:
        text = str(value)
    # Control and format characters (line breaks, escape codes, bidi overrides) become spaces.
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return text.replace("|", "\\|")


def fraction(x, digits=4):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def percent(x):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def f1_score(precision, recall):
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def table(header, rows, align=None):
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def build_markdown(run_dir, epochs, report, classes, errors):
    name = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    confusion = report["confusion"]
    correct = sum(confusion[i][i] for i in range(CLASSES))
    total = sum(sum(row) for row in confusion)
    last = epochs[-1] if epochs else None
    dataset = report["config"].get("dataset", "mnist")
    out = [f"# Run report: {name}", ""]
    summary = f"Dataset **{markdown_cell(dataset)}**, device **{markdown_cell(report['device'])}**, "
    summary += f"{len(epochs)} epoch{'s' if len(epochs) != 1 else ''}"
    if report["train_seconds"] is not None:
        summary += f", {report['train_seconds']:.1f} s of training"
        if report["checkpoint_stall_seconds"] is not None:
            summary += f" ({report['checkpoint_stall_seconds']:.3f} s of it waiting for checkpoints)"
    out += [summary + ".", ""]
    if report["early_stop"]:
        e = report["early_stop"]
        out += [f"Stopped early after epoch {e['stopped_after_epoch']} of {report['config'].get('epochs', '?')}: no "
                f"better validation accuracy for {e['patience']} epochs (`--early-stop {e['patience']}`); the best "
                f"was epoch {e['best_epoch']}, in best.ckpt.", ""]

    out += ["## Final metrics", ""]
    rows = [["test accuracy", f"{percent(report['accuracy'])} ({correct:,} of {total:,})"],
            ["test loss", fraction(report["loss"])]]
    if last:
        e = last["epoch"]
        rows += [[f"train loss (epoch {e})", fraction(last["train_loss"])],
                 [f"train accuracy (epoch {e})", percent(last["train_accuracy"])],
                 [f"validation loss (epoch {e})", fraction(last["val_loss"])],
                 [f"validation accuracy (epoch {e})", percent(last["val_accuracy"])]]
    out += [table(["metric", "value"], rows, ["---", "--:"]), ""]

    out += ["## Training curves", "", "![Loss and accuracy per epoch](curves.png)", ""]
    if epochs:
        rows = [[str(e["epoch"]), fraction(e["train_loss"]), percent(e["train_accuracy"]),
                 fraction(e["val_loss"]), percent(e["val_accuracy"]), fraction(e["seconds"], 1)]
                for e in epochs]
        headers = ["epoch", "train loss", "train accuracy", "val loss", "val accuracy", "seconds"]
        if has_schedule(epochs):  # the rate column only where it changed
            headers.append("learning rate")
            for row, e in zip(rows, epochs):
                row.append(f"{e['lr']:.3g}")
        out += [table(headers, rows, ["--:"] * len(headers)), ""]
    else:
        out += ["metrics.jsonl holds no epochs.", ""]

    out += ["## Test set per class", "",
            f"Precision: of the images predicted as the {classes.noun}, the share that are it; recall: of "
            f"the images of the {classes.noun}, the share predicted as it; F1: their harmonic mean.", ""]
    rows, f1s = [], []
    for c in report["per_class"]:
        f1 = f1_score(c["precision"], c["recall"])
        if f1 is not None:
            f1s.append(f1)
        rows.append([markdown_cell(classes.label(c["class"])), f"{c['support']:,}", fraction(c["precision"]),
                     fraction(c["recall"]), fraction(f1)])
    macro = [sum(v) / len(v) if v else None for v in (
        [c["precision"] for c in report["per_class"] if c["precision"] is not None],
        [c["recall"] for c in report["per_class"] if c["recall"] is not None], f1s)]
    rows.append(["macro average", f"{sum(c['support'] for c in report['per_class']):,}",
                 fraction(macro[0]), fraction(macro[1]), fraction(macro[2])])
    out += [table([classes.noun, "support", "precision", "recall", "F1"], rows, ["--:"] * 5), ""]

    out += ["## Most confused pairs", ""]
    if report["most_confused"]:
        supports = {c["class"]: c["support"] for c in report["per_class"]}
        rows = []
        for p in report["most_confused"]:
            support = supports.get(p["true"], 0)
            share = percent(p["count"] / support) if support else "—"
            rows.append([markdown_cell(classes.label(p["true"])), markdown_cell(classes.label(p["predicted"])),
                         str(p["count"]), share])
        out += [table([f"true {classes.noun}", "predicted", "count", f"share of the true {classes.noun}"],
                      rows, ["--:"] * 4), ""]
    else:
        out += ["No test image was misclassified.", ""]
    out += ["![Confusion matrix of the test set](confusion.png)", ""]

    out += [f"## Misclassified {classes.images}", ""]
    if errors is None:
        out += [f"This run has no errors.json, so there is no gallery of misclassified {classes.images}.", ""]
    else:
        out += ["The test images the model got wrong with the highest confidence, captioned "
                "true→predicted and the probability it gave its prediction.", "",
                "![Most confident mistakes](errors.png)", ""]

    out += ["## Configuration", ""]
    rows = [[markdown_cell(k), markdown_cell(v)] for k, v in report["config"].items()]
    out += [table(["option", "value"], rows) if rows else "report.json holds no configuration.", ""]

    if report["versions"]:
        out += ["## Versions", "", "What the run was built with and ran on (`mnist --version`).", ""]
        rows = [[markdown_cell(k), markdown_cell(v)] for k, v in report["versions"].items()]
        out += [table(["component", "version"], rows), ""]
    return "\n".join(out)


# --- main ---------------------------------------------------------------------------------

def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(f"usage: {os.path.basename(argv[0])} RUN_DIR", file=sys.stderr)
        return 0 if len(argv) == 2 else 2
    run_dir = argv[1]
    try:
        if not os.path.isdir(run_dir):
            raise ReportError(f"{run_dir} is not a directory")
        report = read_report(run_dir)
        epochs = read_epochs(run_dir)
        errors = read_errors(run_dir)
        try:
            import matplotlib
            matplotlib.use("Agg")
            import numpy  # noqa: F401
        except ImportError as e:
            raise ReportError(f"{e.name or 'matplotlib'} is missing for {sys.executable}; "
                              "install python3-matplotlib (apt-get install python3-matplotlib)") from None
        plot_curves(epochs, os.path.join(run_dir, "curves.png"))
        classes = Classes(report)
        plot_confusion(report, classes, os.path.join(run_dir, "confusion.png"))
        if errors is not None:
            plot_errors(errors["errors"], classes, os.path.join(run_dir, "errors.png"))
        write_text(os.path.join(run_dir, "report.md"), build_markdown(run_dir, epochs, report, classes, errors))
    except ReportError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted; the files already drawn are whole, run it again to draw the rest",
              file=sys.stderr)
        return 130
    except Exception as e:  # a case the checks above missed: still one line, not a traceback
        print(f"{PROGRAM}: failed to draw the report of {run_dir} ({type(e).__name__}: {e}); please report it",
              file=sys.stderr)
        return 1
    return print_result(os.path.join(run_dir, "report.md"))


def print_result(text):
    """Prints the line the caller reads; a stdout that cannot take it (a full disk, closed) is an
    error, not a silent success."""
    try:
        if sys.stdout is None:  # started with stdout closed
            raise OSError(9, os.strerror(9))
        print(text)
        sys.stdout.flush()
    except OSError as e:
        # Point stdout at /dev/null, so that the interpreter's own flush at exit fails no more.
        # (With no stdout at all there is nothing to flush, and no descriptor 1 to replace.)
        if sys.stdout is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        print(f"{PROGRAM}: writing to standard output failed ({e.strerror}); the report is drawn: {text}",
              file=sys.stderr)
        return DRAWN_NOT_PRINTED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
