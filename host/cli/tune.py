#!/usr/bin/env python3
"""`mnist tune`: a hyperparameter search on Optuna, each trial one `mnist train` process.

`mnist tune` runs this script with the mnist binary's path in $MNIST_BINARY. Optuna's own
optimize loop drives the trials (so its heartbeat and the retry of trials whose worker died
work), its RDB storage holds the study (SQLite in the output directory by default, PostgreSQL
to share one study between workers on many machines), and its matplotlib plots draw tune.md.
Each epoch line of a trial's metrics.jsonl is reported to the pruner as it appears; a pruned
trial's process gets SIGTERM, saves and stops.
"""
import argparse
import datetime
import functools
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

PROG = "mnist tune"
EXIT_USAGE = 2          # a bad option or search space, as `mnist train` exits on a bad option
EXIT_FAILED = 1         # the storage cannot be opened, or the search itself failed
EXIT_INTERRUPTED = 130  # Ctrl-C: the finished trials are in the study and tune.json

# The default search spaces. Keys are `mnist train` options without their dashes, plus:
#   layers   the number of hidden layers (MLP), each as wide as its own draw of `width`;
#   width    each hidden layer's width (MLP), the dense layer's width (CNN);
#   conv1, conv2  the filters of the CNN's two convolutions.
# A value is {"type": "float", "low", "high", "log"}, {"type": "int", "low", "high", "step",
# "log"}, {"type": "categorical", "choices": [...]}, or a plain value passed to every trial.
DEFAULT_SPACES = {
    "mlp": {
        "lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "layers": {"type": "int", "low": 1, "high": 3},
        "width": {"type": "categorical", "choices": [128, 256, 512, 1024]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "batch-size": {"type": "categorical", "choices": [64, 128, 256, 512]},
        "weight-decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
        "adamw": {"type": "categorical", "choices": [False, True]},
        "label-smoothing": {"type": "float", "low": 0.0, "high": 0.2},
        "lr-schedule": {"type": "categorical", "choices": ["constant", "cosine", "onecycle"]},
        "augment": {"type": "categorical", "choices": ["none", "affine", "elastic"]},
    },
    "cnn": {
        "lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "conv1": {"type": "categorical", "choices": [16, 32, 48]},
        "conv2": {"type": "categorical", "choices": [32, 64, 96]},
        "width": {"type": "categorical", "choices": [256, 512, 1024]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.6},
        "lr-schedule": {"type": "categorical", "choices": ["constant", "cosine"]},
        "augment": {"type": "categorical", "choices": ["none", "affine"]},
    },
}
DERIVED_KEYS = {"layers", "width", "conv1", "conv2"}
# Options a trial's command line sets itself, or that make no sense per trial.
RESERVED_OPTIONS = {"out", "resume", "force", "dry-run", "no-report", "help", "recipe", "model"}
MAX_LAYERS = 8


class UsageError(Exception):
    """A bad option or search space: one line, exit 2, before any trial starts."""


class TrialFailed(Exception):
    """The trial's `mnist train` failed; the message is its one-line reason."""


class Output:
    """stdout that survives being closed (mnist tune | head): the study goes on, its results
    are in tune.json, and the exit status says not everything was printed."""
    lost = False

    @classmethod
    def say(cls, text):
        if cls.lost:
            return
        try:
            print(text, flush=True)
        except OSError:
            cls.lost = True
            sys.stdout = open(os.devnull, "w")


say = Output.say


def fail(message, status):
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


# --- the command line ---------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see mnist tune --help)")


def describe_space(space):
    def one(spec):
        if not isinstance(spec, dict):
            return json.dumps(spec)
        if spec.get("type") == "categorical":
            return "{" + ", ".join(json.dumps(c) for c in spec["choices"]) + "}"
        scale = " log" if spec.get("log") else ""
        return f"{spec['type']} {spec['low']:g}..{spec['high']:g}{scale}"
    return "".join(f"\n  {key:<16} {one(spec)}" for key, spec in space.items())


def parse_args(argv):
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1:]
    else:
        train_args = []
    parser = Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="mnist tune [options] [-- mnist train options passed to every trial]",
        description="Search hyperparameters with Optuna: each trial is one `mnist train` process, each epoch's "
                    "validation metric goes to the pruner, and the study lives in SQLite (default) or any "
                    "database Optuna's storage takes, PostgreSQL for workers on many machines.",
        epilog="default search space, --model mlp:" + describe_space(DEFAULT_SPACES["mlp"]) +
               "\ndefault search space, --model cnn:" + describe_space(DEFAULT_SPACES["cnn"]) +
               "\n\nlayers is the number of hidden layers, each drawing its own width (width_1, width_2, ...);"
               "\nconv1 and conv2 are the CNN's filters; other keys are mnist train options without their dashes."
               "\n--space FILE is a JSON object of such keys; each value is"
               '\n  {"type": "float"|"int", "low": L, "high": H, "log": false, "step": S (int only)},'
               '\n  {"type": "categorical", "choices": [...]}, or a plain value given to every trial.'
               "\n\nexamples:"
               "\n  mnist tune --trials 30 -- --epochs 5 --device cpu"
               "\n  mnist tune --storage postgresql://me@dbhost/tune --study mlp1 --trials 50 -- --epochs 10")
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="the model to tune (default: mlp)")
    parser.add_argument("--trials", type=int, metavar="N", default=None,
                        help="trials this worker runs (default: 20, or as many as --timeout allows)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                        help="start no trial after this many seconds (running ones finish)")
    parser.add_argument("--jobs", type=int, metavar="K", default=1, help="trials at once on this machine (default: 1)")
    parser.add_argument("--space", metavar="FILE", help="a JSON search space replacing the default (see below)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage, e.g. postgresql://user@host/db (default: sqlite:///OUT/study.db)")
    parser.add_argument("--study", metavar="NAME", help="study name; an existing study continues (default: mnist-MODEL)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: runs/tune-<timestamp>); "
                        "trials/NNNN/ are the trials' run directories")
    parser.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median",
                        help="stop hopeless trials early (default: median)")
    parser.add_argument("--startup-trials", type=int, metavar="N", default=5,
                        help="median pruner: finished trials before it prunes any (default: 5)")
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe", help="(default: tpe)")
    parser.add_argument("--seed", type=int, metavar="S", default=None,
                        help="the sampler's seed (default: random); a continued study draws from S plus its "
                             "number of trials; give workers that start together different seeds")
    parser.add_argument("--metric", choices=["val_accuracy", "val_loss"], default="val_accuracy",
                        help="what the study optimizes: a trial's best epoch (default: val_accuracy)")
    parser.add_argument("--heartbeat", type=float, metavar="SECONDS", default=30.0,
                        help="seconds between a running trial's heartbeats; a trial silent for twice as long "
                             "(its worker died) is failed and run again (default: 30)")
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.startup_trials < 0:
        raise UsageError(f"--startup-trials must be 0 or more, got {args.startup_trials}")
    if not (args.heartbeat > 0 and math.isfinite(args.heartbeat)):
        raise UsageError(f"--heartbeat must be a positive number of seconds, got {args.heartbeat:g}")
    if args.trials is None and args.timeout is None:
        args.trials = 20
    args.study = args.study or f"mnist-{args.model}"
    return args, train_args


# --- the search space ---------------------------------------------------------------------

def option_name(arg):
    return arg[2:].split("=", 1)[0] if arg.startswith("--") else None


@functools.lru_cache(maxsize=None)
def train_help(binary):
    """`mnist train --help`, read once: the options and their defaults as mnist itself has them."""
    return subprocess.run([binary, "train", "--help"], capture_output=True, text=True, check=True).stdout


def train_options(binary):
    """The options `mnist train --help` lists, each with whether it is a flag (takes no value),
    so a space key is checked against the real ones."""
    text = train_help(binary)
    found = re.findall(r"^\s+(?:-\w,)?--([a-z0-9-]+)( [A-Z]+)?", text, flags=re.M)
    return {name: value_type == "" for name, value_type in found}


def option_values(train_args, name):
    """The values given to --NAME among `mnist train` options, in order."""
    values = []
    for i, arg in enumerate(train_args):
        if arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
        elif arg == f"--{name}" and i + 1 < len(train_args):
            values.append(train_args[i + 1])
    return values


def trial_epochs(binary, train_args):
    """The --epochs every trial trains for: the last one after `--`, else mnist train's default."""
    given = option_values(train_args, "epochs")
    if given:
        return int(given[-1])
    return int(re.search(r"--epochs INT=(\d+)", train_help(binary)).group(1))


def load_space(args):
    if not args.space:
        return DEFAULT_SPACES[args.model]
    try:
        with open(args.space, encoding="utf-8") as file:
            space = json.load(file)
    except OSError as error:
        raise UsageError(f"--space {args.space}: {error.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"--space {args.space} is not JSON: {error}")
    if not isinstance(space, dict) or not space:
        raise UsageError(f"--space {args.space} must be a JSON object of parameters, e.g. "
                         '{"lr": {"type": "float", "low": 0.0001, "high": 0.003, "log": true}}')
    return space


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_spec(key, spec):
    """Checks one parameter's form; returns it normalized. Raises UsageError naming the key."""
    where = f"search space: '{key}'"
    if not isinstance(spec, dict):
        if isinstance(spec, (list, type(None))) or (isinstance(spec, float) and not math.isfinite(spec)):
            raise UsageError(f"{where}: a plain value must be a number, string or true/false, got {json.dumps(spec)}")
        return spec
    kind = spec.get("type")
    allowed = {"float": {"type", "low", "high", "log"}, "int": {"type", "low", "high", "step", "log"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise UsageError(f"{where}: \"type\" must be \"float\", \"int\" or \"categorical\", got {json.dumps(kind)}")
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise UsageError(f"{where}: unknown field {json.dumps(unknown[0])} for type {kind} "
                         f"(it takes {', '.join(sorted(allowed[kind] - {'type'}))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UsageError(f"{where}: \"choices\" must be a non-empty list")
        for choice in choices:
            if not (isinstance(choice, (str, bool)) or is_number(choice)):
                raise UsageError(f"{where}: choice {json.dumps(choice)} is not a number, string or true/false")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise UsageError(f"{where}: \"choices\" lists a value twice")
        return spec
    for field in ("low", "high"):
        if field not in spec:
            raise UsageError(f"{where}: missing \"{field}\"")
        if not is_number(spec[field]) or (kind == "int" and not float(spec[field]).is_integer()):
            raise UsageError(f"{where}: \"{field}\" must be a{'' if kind == 'float' else ' whole'} number, "
                             f"got {json.dumps(spec[field])}")
    low, high = spec["low"], spec["high"]
    if low > high:
        raise UsageError(f"{where}: \"low\" {low:g} is above \"high\" {high:g}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{where}: \"log\" must be true or false")
    if log and low <= 0:
        raise UsageError(f"{where}: a log scale needs \"low\" above 0, got {low:g}")
    if kind == "int":
        step = spec.get("step", 1)
        if not (is_number(step) and float(step).is_integer() and step >= 1):
            raise UsageError(f"{where}: \"step\" must be a whole number of at least 1, got {json.dumps(step)}")
        if log and step != 1:
            raise UsageError(f"{where}: a log scale takes no \"step\"")
        return {"type": "int", "low": int(low), "high": int(high), "step": int(step), "log": log}
    return {"type": "float", "low": float(low), "high": float(high), "log": log}


def extremes(spec):
    """The values a check of the space tries for one parameter."""
    if not isinstance(spec, dict):
        return [spec]
    if spec["type"] == "categorical":
        return list(spec["choices"])
    if spec["type"] == "int":
        high = spec["low"] + (spec["high"] - spec["low"]) // spec["step"] * spec["step"]
        return sorted({spec["low"], high})
    return sorted({spec["low"], spec["high"]})


def option_value(value):
    return repr(value) if isinstance(value, float) else str(value)


def params_to_args(params, model):
    """A trial's parameters as `mnist train` options."""
    args = []
    layers = params.get("layers")
    widths = [params[f"width_{i}"] for i in range(1, MAX_LAYERS + 1) if f"width_{i}" in params]
    if "width" in params:
        widths = [params["width"]] * (layers or 1) if model == "mlp" else [params["width"]]
    if widths:
        args += ["--hidden", ",".join(str(int(w)) for w in widths)]
    if "conv1" in params or "conv2" in params:
        args += ["--channels", f"{int(params.get('conv1', 32))},{int(params.get('conv2', 64))}"]
    for key, value in params.items():
        if key in DERIVED_KEYS or re.fullmatch(r"width_\d+", key):
            continue
        if isinstance(value, bool):
            args += [f"--{key}"] if value else []
        else:
            args += [f"--{key}", option_value(value)]
    return args


# Space keys that set the same `mnist train` option as one given after `--`.
SAME_OPTION = {"width": "hidden", "layers": "hidden", "conv1": "channels", "conv2": "channels"}


def check_space(space, args, train_args, binary):
    """Every key is an option, and each of its extreme values is one `mnist train` accepts
    beside the options after `--` (checked with --dry-run); any problem is one line naming the key."""
    options = train_options(binary)
    given = {option_name(a) for a in train_args if option_name(a)}
    for option in sorted(given & RESERVED_OPTIONS - {"help"}):
        raise UsageError(("--model cannot be passed to the trials; use mnist tune --model" if option == "model" else
                          f"--{option} cannot be passed to the trials: mnist tune sets it for each trial"))
    checked = {}
    for key, spec in space.items():
        if key.startswith("-"):
            raise UsageError(f"search space: '{key}': write option names without dashes (lr, not --lr)")
        if key in RESERVED_OPTIONS:
            raise UsageError(f"search space: '{key}' cannot be searched: mnist tune sets --{key} itself")
        if key not in options and key not in DERIVED_KEYS:
            raise UsageError(f"search space: '{key}' is not an option of mnist train, nor layers, width, conv1 "
                             "or conv2 (see mnist train --help and mnist tune --help)")
        if args.model == "cnn" and key == "layers":
            raise UsageError("search space: 'layers' is for the MLP; the CNN has one dense layer ('width')")
        if args.model == "mlp" and key in ("conv1", "conv2"):
            raise UsageError(f"search space: '{key}' is for --model cnn")
        same = SAME_OPTION.get(key, key)
        if same in given:
            raise UsageError(f"search space: '{key}' and --{same} after -- set the same option; drop one of them")
        spec = checked[key] = check_spec(key, spec)
        values = extremes(spec)
        if options.get(key, False) and not all(isinstance(v, bool) for v in values):
            raise UsageError(f"search space: '{key}' is a flag: its values are true and false")
        if not options.get(key, False) and any(isinstance(v, bool) for v in values):
            raise UsageError(f"search space: '{key}' takes a value; true and false are for flags such as adamw")
        if key == "layers" and not all(isinstance(v, int) and 1 <= v <= MAX_LAYERS for v in values):
            raise UsageError(f"search space: 'layers' must be whole numbers in 1..{MAX_LAYERS}")
    if "layers" in checked and "width" not in checked:
        raise UsageError("search space: 'layers' needs 'width' (each layer's width)")

    # Corner k takes each key's k-th extreme value (its last, past the end): a few processes check
    # every value; only when one is refused are the keys tried alone, to name the one at fault.
    base = ["--model", args.model, *train_args]
    dry_run(binary, base, "the mnist train options after --")
    if option_values(train_args, "val-split")[-1:] and float(option_values(train_args, "val-split")[-1]) == 0:
        raise UsageError(f"--val-split 0 leaves no validation images, and the trials are compared on {args.metric}")
    values = {key: extremes(spec) for key, spec in checked.items()}
    for k in range(max(len(v) for v in values.values())):
        corner = {key: v[min(k, len(v) - 1)] for key, v in values.items()}
        if "layers" in corner:
            corner["width"] = values["width"][min(k, len(values["width"]) - 1)]
        try:
            dry_run(binary, base + params_to_args(corner, args.model), "")
            continue
        except UsageError as refusal:
            combined = refusal
        for key, value in corner.items():
            alone = {key: value, "width": corner["width"]} if key == "layers" else {key: value}
            dry_run(binary, base + params_to_args(alone, args.model), f"search space: '{key}' = {json.dumps(value)}")
        raise UsageError(f"search space: the values {json.dumps(corner)} together{combined}")
    return checked


def dry_run(binary, train_args, what):
    result = subprocess.run([binary, "train", "--dry-run", *train_args], capture_output=True, text=True)
    if result.returncode != 0:
        reason = last_error_line(result.stderr) or f"mnist train exited with status {result.returncode}"
        raise UsageError(f"{what}: {reason}" if what else f" are refused: {reason}")


def last_error_line(text):
    """The last line `mnist train` said of a failure, without its "mnist: error: " prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("mnist"):
            return re.sub(r"^mnist: error: ", "", line)
    return lines[-1] if lines else ""


def suggest(trial, space):
    params = {}
    for key, spec in space.items():
        if key == "width" and "layers" in space:
            continue
        params[key] = suggest_one(trial, key, spec)
    if "layers" in space:
        for i in range(1, int(params["layers"]) + 1):
            params[f"width_{i}"] = suggest_one(trial, f"width_{i}", space["width"])
    return params


def suggest_one(trial, name, spec):
    if not isinstance(spec, dict):
        trial.set_user_attr(f"fixed:{name}", spec)
        return spec
    if spec["type"] == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    if spec["type"] == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec["step"], log=spec["log"])
    return trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])


# --- storage ------------------------------------------------------------------------------

def redact(url):
    """A storage URL without its password."""
    return re.sub(r"^([a-z0-9+.-]+://[^:/@]*):[^@/]*@", r"\1:***@", url, flags=re.I)


def hide_password(text, url):
    match = re.match(r"^[a-z0-9+.-]+://[^:/@]*:([^@/]*)@", url, flags=re.I)
    if match and match.group(1):
        text = text.replace(match.group(1), "***")
    return text.replace(url, redact(url))


def open_storage(optuna, url, heartbeat):
    from optuna.storages import RDBStorage, RetryFailedTrialCallback
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        engine = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    else:
        engine = {}
    return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=max(1, int(round(heartbeat))),
                      grace_period=max(2, int(round(2 * heartbeat))),
                      failed_trial_callback=RetryFailedTrialCallback(max_retry=2))


def open_study(optuna, args, url, direction):
    """Opens (or creates) the study. Workers that start together on an empty database race to
    create Optuna's tables, and the loser's CREATE fails: it tries again, and then finds them."""
    import sqlalchemy.exc
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = open_storage(optuna, url, args.heartbeat)
                # A continued study's sampler starts from --seed plus its number of trials, so it does not
                # draw the values of its first trials again.
                seed = None
                if args.seed is not None:
                    existing = [s for s in optuna.get_all_study_summaries(storage) if s.study_name == args.study]
                    seed = args.seed + (existing[0].n_trials if existing else 0)
                if args.sampler == "tpe":
                    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
                else:
                    sampler = optuna.samplers.RandomSampler(seed=seed)
                pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials,
                                                                        n_warmup_steps=2),
                          "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
                          "none": lambda: optuna.pruners.NopPruner()}[args.pruner]()
                return optuna.create_study(storage=storage, study_name=args.study, direction=direction,
                                           sampler=sampler, pruner=pruner, load_if_exists=True)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.2 + 0.3 * attempt)


# --- one trial ----------------------------------------------------------------------------

STOPPED = "stopped with mnist tune (Ctrl-C or SIGTERM); its last.ckpt is saved"
NOT_STARTED = "not started: mnist tune was stopped (Ctrl-C or SIGTERM)"


class Trials:
    """Runs each trial's `mnist train` and reports its epochs; shared by the optimize threads."""

    def __init__(self, args, train_args, space, binary, out):
        self.args, self.train_args, self.space, self.binary, self.out = args, train_args, space, binary, out
        self.epochs = trial_epochs(binary, train_args)  # checked by the dry run: a whole number
        self.lock = threading.Lock()
        self.processes = set()
        self.stopping = False  # set by stop_all: a trial that ends now was stopped by us

    def objective(self, trial):
        import optuna
        if self.stopping:  # the signal came between two trials
            trial.study.stop()
            trial.set_user_attr("error", NOT_STARTED)
            raise TrialFailed(NOT_STARTED)
        params = suggest(trial, self.space)
        run_dir = os.path.join(self.out, "trials", f"{trial.number:04d}")
        command = [self.binary, "train", "--model", self.args.model, *self.train_args,
                   *params_to_args(params, self.args.model)]
        trial.set_user_attr("train_args", command[2:])
        trial.set_user_attr("run_dir", os.path.abspath(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        os.makedirs(os.path.dirname(run_dir), exist_ok=True)
        log_path = run_dir + ".log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command + ["--out", run_dir, "--no-report"], stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL)
        with self.lock:
            self.processes.add(process)
        if self.stopping:  # the signal came while it started: stop_all may not have seen it
            process.send_signal(signal.SIGTERM)
        try:
            epochs, pruned = self.follow(trial, process, os.path.join(run_dir, "metrics.jsonl"))
        finally:
            with self.lock:
                self.processes.discard(process)
        if self.stopping and process.returncode != 0:  # stopped by Ctrl-C or SIGTERM (stop_all)
            trial.study.stop()
            trial.set_user_attr("error", STOPPED)
            raise TrialFailed(STOPPED)
        trial.set_user_attr("epochs", len(epochs))
        if pruned:
            trial.set_user_attr("stopped_after_epoch", len(epochs))
            raise optuna.TrialPruned(f"pruned after epoch {len(epochs)}")
        if process.returncode != 0:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                reason = last_error_line(log.read()) or f"mnist train exited with status {process.returncode}"
            if process.returncode < 0:
                reason = f"mnist train was killed by signal {-process.returncode}"
            trial.set_user_attr("error", reason)
            raise TrialFailed(reason)
        values = [float(e[self.args.metric]) for e in epochs]
        values = [v for v in values if math.isfinite(v)]
        if not values:
            reason = f"no epoch of the trial has a validation {self.args.metric[4:]} (with --val-split 0 there is none)"
            trial.set_user_attr("error", reason)
            raise TrialFailed(reason)
        try:
            with open(os.path.join(run_dir, "report.json"), encoding="utf-8") as file:
                test = json.load(file).get("test", {})
            if "accuracy" in test:
                trial.set_user_attr("test_accuracy", test["accuracy"])
        except (OSError, ValueError):
            pass
        return max(values) if self.args.metric == "val_accuracy" else min(values)

    def follow(self, trial, process, metrics_path):
        """Reports each new metrics.jsonl line; SIGTERM to the process when the pruner says so."""
        epochs, pending, offset, pruned = [], b"", 0, False
        while True:
            finished = process.poll() is not None
            try:
                with open(metrics_path, "rb") as file:
                    file.seek(offset)
                    chunk = file.read()
                    offset += len(chunk)
            except FileNotFoundError:
                chunk = b""
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    record = json.loads(line)
                    value = float(record[self.args.metric])
                except (ValueError, KeyError, TypeError):
                    continue
                epochs.append(record)
                if pruned or not math.isfinite(value):
                    continue
                trial.report(value, int(record.get("epoch", len(epochs))))
                # The last epoch is never pruned: the trial is as good as done.
                if not finished and len(epochs) < self.epochs and trial.should_prune():
                    pruned = True
                    process.send_signal(signal.SIGTERM)  # it saves last.ckpt and stops
            if finished:
                return epochs, pruned
            try:
                process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass

    def stop_all(self):
        """SIGTERM to every running trial, and no trial after them (the objective and the callback
        then stop Optuna's loop). Called from the signal handler, so it takes no lock and raises
        nothing into the code it interrupts (an Optuna storage write, say): list() copies the set
        in one step, which no other thread can interleave with."""
        self.stopping = True
        for process in list(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)


# --- reporting ----------------------------------------------------------------------------

def param_text(params):
    def one(value):
        return f"{value:.3g}" if isinstance(value, float) else str(value)
    return " ".join(f"{key}={one(value)}" for key, value in params.items())


def trial_seconds(trial):
    """How long a finished trial took; None for one that never finished."""
    return trial.duration.total_seconds() if trial.duration else None


def complete_best_first(study):
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return sorted(complete, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")


def trial_record(trial):
    seconds = trial_seconds(trial)
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "seconds": seconds, "epochs": trial.user_attrs.get("epochs"),
            "test_accuracy": trial.user_attrs.get("test_accuracy"), "error": trial.user_attrs.get("error"),
            "train_args": trial.user_attrs.get("train_args"), "run_dir": trial.user_attrs.get("run_dir"),
            "host": trial.user_attrs.get("host"),
            "retry_of": trial.system_attrs.get("failed_trial")}


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:
        return None


def reproduce_command(trial):
    return "mnist train " + " ".join(shlex.quote(a) for a in trial.user_attrs.get("train_args", []))


def write_json_atomically(path, value):
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=1)
        file.write("\n")
    os.replace(temporary, path)


def note_retries(records):
    """A trial failed by the heartbeat has no error of its own: say so, and which trial ran it again."""
    retried_as = {r["retry_of"]: r["number"] for r in records if r["retry_of"] is not None}
    for record in records:
        if record["state"] == "FAIL" and not record["error"]:
            record["error"] = "its worker stopped (no heartbeat)"
            if record["number"] in retried_as:
                record["error"] += f"; run again as trial {retried_as[record['number']]}"
    return records


def write_tune_json(study, args, url, space, out, lock):
    with lock:
        trials = note_retries([trial_record(t) for t in study.get_trials(deepcopy=False)])
        best = best_trial(study)
        write_json_atomically(os.path.join(out, "tune.json"), {
            "study": study.study_name, "storage": redact(url), "model": args.model, "metric": args.metric,
            "direction": study.direction.name.lower(), "pruner": args.pruner, "sampler": args.sampler,
            "space": space, "best": trial_record(best) if best else None,
            "trials": trials})


def draw_tune_md(study, args, out, best):
    """tune.md with Optuna's matplotlib plots; a plot that cannot be drawn says why."""
    import logging
    import matplotlib
    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # "No artists with labels" with no finished trial
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots
    lines = [f"# Study {study.study_name}", "",
             f"{args.model} model, {args.metric} ({study.direction.name.lower()}), sampler {args.sampler}, "
             f"pruner {args.pruner}.", ""]
    states = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    lines += ["Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())), ""]
    if best:
        lines += [f"Best: trial {best.number}, {args.metric} {best.value:.4f}", "", "```",
                  reproduce_command(best), "```", ""]
        lines += [f"| trial | {args.metric} | test accuracy | seconds | parameters |", "|--:|--:|--:|--:|---|"]
        for trial in complete_best_first(study)[:5]:
            test = trial.user_attrs.get("test_accuracy")
            seconds = trial_seconds(trial) or 0.0
            lines.append(f"| {trial.number} | {trial.value:.4f} | {'-' if test is None else f'{test:.4f}'} | "
                         f"{seconds:.1f} | {param_text(trial.params)} |")
        lines.append("")
    pictures = [("history.png", "Optimization history", plots.plot_optimization_history),
                ("importances.png", "Parameter importances", plots.plot_param_importances),
                ("slice.png", "Slice plot", plots.plot_slice),
                ("parallel.png", "Parallel coordinates", plots.plot_parallel_coordinate)]
    for name, title, plot in pictures:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
            figure.savefig(os.path.join(out, name), dpi=90, bbox_inches="tight")
            plt.close(figure)
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
        except Exception as error:  # too few trials for this plot, for one
            plt.close("all")
            lines += [f"## {title}", "", f"Not drawn: {str(error).splitlines()[0] if str(error) else type(error).__name__}.", ""]
    with open(os.path.join(out, "tune.md"), "w", encoding="utf-8") as file:
        file.write("\n".join(lines))


class Progress:
    """One line per finished trial, then a progress line."""

    def __init__(self, args, started):
        self.args, self.started, self.done, self.durations = args, started, {}, []
        self.lock = threading.Lock()

    def __call__(self, study, trial):
        with self.lock:
            state = trial.state.name
            self.done[state] = self.done.get(state, 0) + 1
            seconds = trial_seconds(trial) or 0.0
            self.durations.append(seconds)
            if state == "PRUNED":
                value = f"after epoch {trial.user_attrs.get('epochs', 0)}"
            elif trial.value is not None:
                value = f"{self.args.metric} {trial.value:.4f}"
            else:
                value = trial.user_attrs.get("error", "")
            say(f"trial {trial.number:4d}  {state:<8}  {value}  {seconds:.1f} s  {param_text(trial.params)}")
            finished = sum(self.done.values())
            left = ""
            mean = sum(self.durations) / len(self.durations)
            estimates = []
            if self.args.trials is not None:
                estimates.append(max(0, self.args.trials - finished) * mean / self.args.jobs)
            if self.args.timeout is not None:
                estimates.append(max(0.0, self.args.timeout - (time.monotonic() - self.started)) + mean)
            if estimates:
                left = f", about {format_seconds(min(estimates))} left"
            total = f"/{self.args.trials}" if self.args.trials is not None else ""
            best = best_trial(study)
            best_text = f", best {best.value:.4f} (trial {best.number})" if best else ""
            say(f"progress: {finished}{total} done ({self.done.get('COMPLETE', 0)} complete, "
                f"{self.done.get('PRUNED', 0)} pruned, {self.done.get('FAIL', 0)} failed){best_text}{left}")


def format_seconds(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summarize(study, args, out):
    best = best_trial(study)
    if best is None:
        say(f"no trial completed; see {os.path.join(out, 'tune.json')} for why")
        return None
    say(f"best: trial {best.number}, {args.metric} {best.value:.4f}: {param_text(best.params)}")
    say(f"reproduce: {reproduce_command(best)}")
    complete = complete_best_first(study)
    say(f"top {min(5, len(complete))} of {len(complete)} complete trials:")
    say(f"  {'trial':>5}  {args.metric:>12}  {'test acc':>8}  {'seconds':>7}  parameters")
    for trial in complete[:5]:
        test = trial.user_attrs.get("test_accuracy")
        test_text = f"{test:.4f}" if test is not None else "-"
        seconds = trial_seconds(trial) or 0.0
        say(f"  {trial.number:>5}  {trial.value:>12.4f}  {test_text:>8}  {seconds:>7.1f}  {param_text(trial.params)}")
    checkpoint = os.path.join(best.user_attrs.get("run_dir", ""), "best.ckpt")
    if best.user_attrs.get("host") == socket.gethostname() and os.path.isfile(checkpoint):
        shutil.copyfile(checkpoint, os.path.join(out, "best.ckpt") + ".tmp")
        os.replace(os.path.join(out, "best.ckpt") + ".tmp", os.path.join(out, "best.ckpt"))
        say(f"best.ckpt: a copy of trial {best.number}'s (mnist evaluate --model {os.path.join(out, 'best.ckpt')})")
    else:
        say(f"best.ckpt: trial {best.number} ran on {best.user_attrs.get('host', 'another worker')}, "
              f"in {best.user_attrs.get('run_dir', '?')}; its best.ckpt is there")
    return best


# --- main ---------------------------------------------------------------------------------

def main(argv):
    binary = os.environ.get("MNIST_BINARY") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist")
    try:
        args, train_args = parse_args(argv)
    except UsageError as error:
        fail(str(error), EXIT_USAGE)
    if not os.access(binary, os.X_OK):
        fail(f"the mnist binary {binary} is missing; run mnist tune through it (or set MNIST_BINARY)", EXIT_FAILED)
    # The space first: a mistake in it is found without waiting for Optuna to load.
    try:
        space = load_space(args)
        space = check_space(space, args, train_args, binary)
    except UsageError as error:
        fail(str(error), EXIT_USAGE)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import optuna
            import sqlalchemy  # noqa: F401 (Optuna's storage)
    except ImportError as error:
        fail(f"{error.name} is not installed: mnist tune needs Optuna (apt-get install python3-optuna "
             "python3-sklearn python3-psycopg2)", EXIT_FAILED)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    out = args.out or os.path.join("runs", "tune-" + datetime.datetime.now(datetime.timezone.utc)
                                   .strftime("%Y%m%dT%H%M%SZ"))
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} exists and is not a directory", EXIT_USAGE)
    # Trial folders are numbered per study: two studies in one --out would share trials/0000.
    try:
        with open(os.path.join(out, "tune.json"), encoding="utf-8") as file:
            earlier_study = json.load(file).get("study")
    except (OSError, ValueError, AttributeError):
        earlier_study = None
    if earlier_study not in (None, args.study):
        fail(f"--out {out} holds the trials of study {earlier_study}; continue it with --study {earlier_study}, "
             f"or give study {args.study} another --out", EXIT_USAGE)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        fail(f"cannot create --out {out}: {error.strerror}", EXIT_FAILED)
    url = args.storage or "sqlite:///" + os.path.abspath(os.path.join(out, "study.db"))
    direction = "maximize" if args.metric == "val_accuracy" else "minimize"
    try:
        study = open_study(optuna, args, url, direction)
    except Exception as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        fail(hide_password(f"cannot open the study storage {url}: {reason[0] if reason else type(error).__name__}",
                           url), EXIT_FAILED)
    if study.direction.name.lower() != direction:
        fail(f"study {args.study} {study.direction.name.lower()}s; it was not started with --metric {args.metric}",
             EXIT_USAGE)

    earlier = len(study.get_trials(deepcopy=False))
    say(f"study {args.study} in {redact(url)}: {earlier} trials so far; "
          f"{f'{args.trials} trials' if args.trials else 'trials'}"
          f"{f' for at most {format_seconds(args.timeout)}' if args.timeout else ''}, {args.jobs} at a time, "
        f"{args.metric} by {args.sampler} with {args.pruner} pruning; trials in {os.path.join(out, 'trials')}")
    started = time.monotonic()
    trials = Trials(args, train_args, space, binary, out)
    global RUNNING_TRIALS
    RUNNING_TRIALS = trials
    json_lock = threading.Lock()
    progress = Progress(args, started)

    def after_trial(study, trial):
        progress(study, trial)
        write_tune_json(study, args, url, space, out, json_lock)
        if trials.stopping:
            study.stop()

    status = 0
    try:
        study.optimize(trials.objective, n_trials=args.trials, timeout=args.timeout, n_jobs=args.jobs,
                       catch=(TrialFailed,), callbacks=[after_trial], gc_after_trial=False)
    except KeyboardInterrupt:  # a Ctrl-C that the handler did not take (none should come)
        trials.stop_all()
    if trials.stopping:
        status = EXIT_INTERRUPTED
        print(f"{PROG}: interrupted; the finished trials are kept. Continue the study with the same --study and "
              f"{'--storage' if args.storage else '--out ' + out}", file=sys.stderr, flush=True)
    write_tune_json(study, args, url, space, out, json_lock)
    best = summarize(study, args, out)
    try:
        draw_tune_md(study, args, out, best)
        say(f"wrote tune.json and tune.md in {out}")
    except ImportError:
        say(f"wrote tune.json in {out} (tune.md needs python3-matplotlib)")
    if Output.lost and status == 0:
        print(f"{PROG}: error: writing to standard output failed: not all the results were printed; {out} holds "
              "them", file=sys.stderr, flush=True)
        status = EXIT_FAILED
    return status


RUNNING_TRIALS = None  # the study's Trials, once it runs: what a signal stops


def stop_on_signal(signum, frame):
    """Ctrl-C and SIGTERM (a batch scheduler's kill): once the study runs, the running trials get
    SIGTERM at once (with --jobs too) and no new one starts; before, it stops as Ctrl-C does."""
    if RUNNING_TRIALS is None:
        raise KeyboardInterrupt
    RUNNING_TRIALS.stop_all()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_signal)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored when started in the background
        signal.signal(signal.SIGINT, stop_on_signal)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted before the study started", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
