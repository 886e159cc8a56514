#!/usr/bin/env python3
"""`mnist tune` end to end with tiny CPU trials (a training subset, a few epochs, small layers):
a study's trials and outputs, the best trial reproduced, pruning that stops processes early, a
worker killed mid-trial and its study continued, several trials at once, and the one-line
refusals of a bad space, option or storage. Needs MNIST in data/mnist, python3-optuna and the
mnist binary in $MNIST_BINARY (ctest sets it)."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

import optuna

BINARY = os.environ.get("MNIST_BINARY", os.path.join(os.path.dirname(__file__), "..", "build", "mnist"))
TINY = ["--device", "cpu", "--train-subset", "2000", "--seed", "1"]


def tune(*args, check=True, timeout=300):
    result = subprocess.run([BINARY, "tune", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"mnist tune {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def write_space(directory, space):
    path = os.path.join(directory, "space.json")
    with open(path, "w") as file:
        json.dump(space, file)
    return path


def load(out):
    with open(os.path.join(out, "tune.json")) as file:
        return json.load(file)


def metrics_lines(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


class TuneStudy(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="mnist-tune-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_a_study_of_n_trials_has_them_all_and_its_best_reproduces(self):
        space = write_space(self.dir, {"lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
                                       "layers": {"type": "int", "low": 1, "high": 2},
                                       "width": {"type": "categorical", "choices": [16, 32]},
                                       "adamw": {"type": "categorical", "choices": [False, True]}})
        out = os.path.join(self.dir, "study")
        result = tune("--out", out, "--trials", "4", "--pruner", "none", "--space", space, "--", *TINY, "--epochs", "2")
        report = load(out)
        self.assertEqual(len(report["trials"]), 4)
        self.assertEqual([t["state"] for t in report["trials"]], ["COMPLETE"] * 4)
        self.assertEqual(sorted(os.listdir(os.path.join(out, "trials"))),
                         ["0000", "0000.log", "0001", "0001.log", "0002", "0002.log", "0003", "0003.log"])
        for trial in report["trials"]:
            epochs = metrics_lines(os.path.join(out, "trials", f"{trial['number']:04d}"))
            self.assertEqual(len(epochs), 2)
            self.assertEqual(trial["value"], max(e["val_accuracy"] for e in epochs))
            hidden = trial["train_args"][trial["train_args"].index("--hidden") + 1].split(",")
            self.assertEqual(len(hidden), trial["params"]["layers"])
            self.assertEqual(("--adamw" in trial["train_args"]), trial["params"]["adamw"])
        self.assertEqual(report["storage"], "sqlite:///" + os.path.abspath(os.path.join(out, "study.db")))
        best = report["best"]
        self.assertEqual(best["value"], max(t["value"] for t in report["trials"]))
        for name in ("study.db", "best.ckpt", "tune.md", "history.png", "importances.png", "slice.png"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
        self.assertEqual(len(re.findall(r"^trial +\d+ +COMPLETE", result.stdout, flags=re.M)), 4)
        self.assertIn(f"best: trial {best['number']}, val_accuracy {best['value']:.4f}", result.stdout)
        with open(os.path.join(out, "tune.md")) as file:
            markdown = file.read()
        self.assertIn(f"| {best['number']} | {best['value']:.4f} | {best['test_accuracy']:.4f} |", markdown)
        self.assertIn("![Parameter importances](importances.png)", markdown)

        # The printed command trains the best trial again, to the same validation accuracy.
        command = re.search(r"^reproduce: mnist train (.*)$", result.stdout, flags=re.M).group(1).split()
        again = os.path.join(self.dir, "again")
        subprocess.run([BINARY, "train", *command, "--out", again, "--no-report"], check=True, capture_output=True)
        self.assertEqual(max(e["val_accuracy"] for e in metrics_lines(again)), best["value"])
        # best.ckpt is the best trial's, usable by evaluate.
        with open(os.path.join(out, "best.ckpt"), "rb") as a, \
                open(os.path.join(out, "trials", f"{best['number']:04d}", "best.ckpt"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        evaluated = subprocess.run([BINARY, "evaluate", "--device", "cpu", "--model", os.path.join(out, "best.ckpt")],
                                   capture_output=True, text=True, check=True)
        self.assertIn(f"accuracy {best['test_accuracy']:.4f}", evaluated.stdout)

        # The same --out again continues the study: 2 more trials, numbered on.
        tune("--out", out, "--trials", "2", "--pruner", "none", "--space", space, "--", *TINY, "--epochs", "1")
        self.assertEqual([t["number"] for t in load(out)["trials"]], [0, 1, 2, 3, 4, 5])
        # Another study in the same --out would number its trials from 0 again: refused.
        other = tune("--out", out, "--study", "other", "--trials", "1", "--space", space, "--", *TINY, check=False)
        self.assertEqual(other.returncode, 2)
        self.assertEqual(other.stderr.strip(), f"mnist tune: error: --out {out} holds the trials of study mnist-mlp; "
                         "continue it with --study mnist-mlp, or give study other another --out")

    def test_pruning_stops_hopeless_trials_early(self):
        # A learning rate of 1e-6 leaves a trial near chance while 3e-3 learns: the median pruner
        # stops the slow ones from epoch 2 on, long before their 20. Seed 2 draws good, good, good,
        # slow, ... with Optuna 3.1's random sampler, so the pruner has its 2 finished trials first.
        space = write_space(self.dir, {"lr": {"type": "categorical", "choices": [0.003, 1e-6]},
                                       "hidden": "32"})
        out = os.path.join(self.dir, "study")
        result = tune("--out", out, "--trials", "8", "--sampler", "random", "--seed", "2", "--startup-trials", "2",
                      "--space", space, "--", *TINY, "--epochs", "20")
        trials = load(out)["trials"]
        pruned = [t for t in trials if t["state"] == "PRUNED"]
        self.assertGreaterEqual(len(pruned), 1, result.stdout)
        for trial in pruned:
            self.assertEqual(trial["params"]["lr"], 1e-6)
            run_dir = os.path.join(out, "trials", f"{trial['number']:04d}")
            # Stopped early by SIGTERM, after saving: fewer epochs than asked for, and last.ckpt.
            self.assertLess(len(metrics_lines(run_dir)), 20)
            self.assertTrue(os.path.isfile(os.path.join(run_dir, "last.ckpt")))
            with open(run_dir + ".log") as log:
                self.assertIn("interrupted", log.read())
        self.assertTrue(all(t["state"] == "COMPLETE" for t in trials if t["params"]["lr"] == 0.003))
        self.assertRegex(result.stdout, r"trial +\d+ +PRUNED +after epoch \d+ ")

    def test_a_killed_worker_leaves_no_trial_running_and_loses_none(self):
        space = write_space(self.dir, {"lr": {"type": "float", "low": 1e-3, "high": 2e-3}, "hidden": "16"})
        out = os.path.join(self.dir, "study")
        worker = subprocess.Popen([BINARY, "tune", "--out", out, "--trials", "5", "--pruner", "none",
                                   "--heartbeat", "1", "--space", space, "--", *TINY, "--epochs", "40"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        try:
            # Wait for one finished trial and the next one mid-way, then kill the worker and its
            # trial as a crash of the machine would (SIGKILL, nothing saved).
            while True:
                self.assertLess(time.monotonic(), deadline, "the first trial did not finish")
                done = os.path.exists(os.path.join(out, "tune.json")) and \
                    any(t["state"] == "COMPLETE" for t in load(out)["trials"])
                if not done:
                    time.sleep(0.05)
                    continue
                running = [d for d in sorted(os.listdir(os.path.join(out, "trials")))
                           if not d.endswith(".log") and len(metrics_lines(os.path.join(out, "trials", d))) >= 1]
                if done and len(running) >= 2:
                    break
                time.sleep(0.05)
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        url = "sqlite:///" + os.path.abspath(os.path.join(out, "study.db"))
        before = optuna.load_study(study_name="mnist-mlp", storage=url).get_trials()
        self.assertEqual([t.state.name for t in before].count("RUNNING"), 1)
        complete_before = {t.number: t.value for t in before if t.state.name == "COMPLETE"}
        self.assertGreaterEqual(len(complete_before), 1)
        killed = next(t.number for t in before if t.state.name == "RUNNING")

        time.sleep(2.5)  # past the grace period of a 1 s heartbeat
        tune("--out", out, "--trials", "2", "--pruner", "none", "--heartbeat", "1", "--space", space,
             "--", *TINY, "--epochs", "2")
        trials = {t["number"]: t for t in load(out)["trials"]}
        self.assertNotIn("RUNNING", [t["state"] for t in trials.values()])
        for number, value in complete_before.items():  # nothing finished was lost or redone
            self.assertEqual((trials[number]["state"], trials[number]["value"]), ("COMPLETE", value))
        self.assertEqual(trials[killed]["state"], "FAIL")
        retries = [t for t in trials.values() if t["retry_of"] == killed]
        self.assertEqual(len(retries), 1)
        self.assertEqual(retries[0]["state"], "COMPLETE")
        self.assertEqual(retries[0]["params"], trials[killed]["params"])
        self.assertIn(f"run again as trial {retries[0]['number']}", trials[killed]["error"])
        self.assertEqual(len(trials), len(before) + 2)

    def test_sigterm_stops_the_running_trials_cleanly_and_keeps_the_study(self):
        space = write_space(self.dir, {"lr": {"type": "float", "low": 1e-3, "high": 2e-3}, "hidden": "16"})
        for jobs in (1, 2):
            out = os.path.join(self.dir, f"study-{jobs}")
            worker = subprocess.Popen([BINARY, "tune", "--out", out, "--trials", "3", "--jobs", str(jobs), "--pruner",
                                       "none", "--space", space, "--", *TINY, "--epochs", "200"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 60
            runs = [os.path.join(out, "trials", f"{n:04d}") for n in range(jobs)]
            while any(len(metrics_lines(run)) < 2 for run in runs):
                self.assertLess(time.monotonic(), deadline, "the first trials did not start")
                time.sleep(0.05)
            worker.send_signal(signal.SIGTERM)  # to mnist tune alone, not to its trials
            stdout, stderr = worker.communicate(timeout=60)
            self.assertEqual(worker.returncode, 130, stderr)
            self.assertIn("interrupted; the finished trials are kept", stderr)
            trials = load(out)["trials"]
            self.assertEqual([(t["state"], t["error"]) for t in trials],
                             [("FAIL", "stopped with mnist tune (Ctrl-C or SIGTERM); its last.ckpt is saved")] * jobs)
            for run in runs:  # each stopped at once, after saving, long before its 200 epochs
                self.assertLess(len(metrics_lines(run)), 200)
                self.assertTrue(os.path.isfile(os.path.join(run, "last.ckpt")))

    def test_jobs_run_trials_at_once(self):
        space = write_space(self.dir, {"lr": {"type": "float", "low": 1e-3, "high": 2e-3}, "hidden": "16"})
        out = os.path.join(self.dir, "study")
        tune("--out", out, "--trials", "4", "--jobs", "2", "--space", space, "--", *TINY, "--epochs", "1")
        trials = load(out)["trials"]
        self.assertEqual(sorted(t["number"] for t in trials), [0, 1, 2, 3])
        self.assertEqual({t["state"] for t in trials}, {"COMPLETE"})

    def test_a_failing_trial_is_failed_with_its_reason_and_the_study_goes_on(self):
        # The trials' --data-dir passes the check before the first trial, then its files vanish:
        # the trials that start after that fail with mnist train's own one-line reason.
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        for name in os.listdir("data/mnist"):
            os.symlink(os.path.abspath(os.path.join("data/mnist", name)), os.path.join(data, name))
        space = write_space(self.dir, {"lr": {"type": "float", "low": 1e-3, "high": 2e-3}, "hidden": "16"})
        out = os.path.join(self.dir, "study")
        worker = subprocess.Popen([BINARY, "tune", "--out", out, "--trials", "3", "--pruner", "none", "--space", space,
                                   "--", *TINY, "--epochs", "1", "--data-dir", data],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not os.path.isdir(os.path.join(out, "trials")):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        for name in os.listdir(data):
            os.remove(os.path.join(data, name))
        stdout, stderr = worker.communicate(timeout=120)
        self.assertEqual(worker.returncode, 0, stderr)
        trials = load(out)["trials"]
        self.assertEqual(len(trials), 3)
        failed = [t for t in trials if t["state"] == "FAIL"]
        self.assertGreaterEqual(len(failed), 2)
        for trial in failed:
            self.assertRegex(trial["error"], "^mnist: data error: " + re.escape(data) + ".* not found")
            self.assertNotIn("\n", trial["error"])
        self.assertIn("no trial completed" if len(failed) == 3 else "best: trial", stdout)


class TrainDryRun(unittest.TestCase):
    """The check tune runs on its space: `mnist train --dry-run` checks and writes nothing."""

    def test_a_dry_run_checks_the_options_and_writes_nothing(self):
        with tempfile.TemporaryDirectory(prefix="mnist-dry-") as directory:
            out = os.path.join(directory, "run")
            result = subprocess.run([BINARY, "train", "--dry-run", "--device", "cpu", "--hidden", "32", "--out", out],
                                    capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertRegex(result.stdout, r"^dry run: .* 784-32-10 MLP on 54000 images")
            self.assertFalse(os.path.exists(out))
            refused = subprocess.run([BINARY, "train", "--dry-run", "--device", "cpu", "--train-subset", "100"],
                                     capture_output=True, text=True)
            self.assertEqual(refused.returncode, 2)
            self.assertIn("--batch-size 128 is larger than the training set (100 images)", refused.stderr)


class TuneRefusals(unittest.TestCase):
    """Each refusal: one line on stderr, a non-zero exit, no trial run."""

    def refused(self, args, status, pattern, space=None):
        with tempfile.TemporaryDirectory(prefix="mnist-tune-") as directory:
            out = os.path.join(directory, "study")
            if space is not None:
                path = os.path.join(directory, "space.json")
                with open(path, "w") as file:
                    file.write(space if isinstance(space, str) else json.dumps(space))
                args = ["--space", path, *args]
            result = tune("--out", out, *args, check=False)
            self.assertEqual(result.returncode, status, result.stderr)
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertRegex(lines[0], "^mnist tune: error: " + pattern)
            self.assertFalse(os.path.exists(os.path.join(out, "trials")))
            return lines[0]

    def test_bad_spaces_name_the_key(self):
        self.refused([], 2, r"--space .* is not JSON", space='{"lr": ')
        self.refused([], 2, r"--space .* must be a JSON object", space="[1, 2]")
        self.refused([], 2, r"search space: 'lr': \"low\" 0.01 is above \"high\" 0.001",
                     space={"lr": {"type": "float", "low": 0.01, "high": 0.001}})
        self.refused([], 2, r"search space: 'lr': a log scale needs \"low\" above 0",
                     space={"lr": {"type": "float", "low": 0, "high": 0.001, "log": True}})
        self.refused([], 2, r"search space: 'dropout' = 1.5: --dropout must be in \[0, 1\)",
                     space={"dropout": {"type": "float", "low": 0, "high": 1.5}})
        self.refused(["--", "--device", "cpu", "--train-subset", "200"], 2,
                     r"search space: 'batch-size' = 512: --batch-size 512 is larger than the training set",
                     space={"batch-size": {"type": "categorical", "choices": [64, 512]}})
        self.refused([], 2, r"search space: 'width': \"choices\" must be a non-empty list",
                     space={"width": {"type": "categorical", "choices": []}})
        self.refused([], 2, r"search space: 'lrate' is not an option of mnist train",
                     space={"lrate": {"type": "float", "low": 0.001, "high": 0.01}})
        self.refused([], 2, r"search space: 'epochs': \"type\" must be", space={"epochs": {"type": "integer"}})
        self.refused([], 2, r"search space: 'out' cannot be searched", space={"out": "x"})
        self.refused([], 2, r"search space: 'adamw' is a flag", space={"adamw": {"type": "categorical",
                                                                                 "choices": [1, 2]}})
        self.refused([], 2, r"search space: 'layers' needs 'width'",
                     space={"layers": {"type": "int", "low": 1, "high": 2}})

    def test_bad_options(self):
        self.refused(["--bogus"], 2, r"unrecognized arguments: --bogus")
        self.refused(["--trials", "0"], 2, r"--trials must be at least 1")
        self.refused(["--pruner", "best"], 2, r"argument --pruner: invalid choice")
        self.refused(["--", "--out", "x"], 2, r"--out cannot be passed to the trials")
        self.refused(["--", "--lr", "0.01"], 2, r"search space: 'lr' and --lr after -- set the same option")
        self.refused(["--", "--epochs", "0"], 2, r"the mnist train options after --: --epochs")
        self.refused(["--", "--val-split", "0"], 2, r"--val-split 0 leaves no validation images")

    def test_an_unreachable_storage_is_one_line_without_its_password(self):
        line = self.refused(["--storage", "postgresql://tuner:hunter2secret@127.0.0.1:1/study"], 1,
                            r"cannot open the study storage postgresql://tuner:\*\*\*@127\.0\.0\.1:1/study: ")
        self.assertNotIn("hunter2secret", line)
        self.refused(["--storage", "nosuchdb://x/y"], 1, r"cannot open the study storage nosuchdb://x/y: ")


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    unittest.main(verbosity=2)
