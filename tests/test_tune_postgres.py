#!/usr/bin/env python3
"""Two `mnist tune` workers at once against one study on a real PostgreSQL server, started here
in a temporary directory (initdb, pg_ctl, 127.0.0.1 on a free port) and stopped after: the study
ends with exactly the sum of their trials, numbered without gaps or duplicates, and the password
in the storage URL appears in no output. If the server cannot start, the test fails and says why."""
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import unittest

import optuna

BINARY = os.environ.get("MNIST_BINARY", os.path.join(os.path.dirname(__file__), "..", "build", "mnist"))
PASSWORD = "s3cret-Pa55word"


def postgres_bin(name):
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise AssertionError(f"{name} not found: install PostgreSQL (apt-get install postgresql; .ci/setup --tests does)")
    return found


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A throw-away PostgreSQL cluster. initdb refuses to run as root: then it runs as `postgres`."""

    def __init__(self, directory):
        self.directory, self.port = directory, free_port()
        self.data = os.path.join(directory, "data")
        self.as_user = []
        os.makedirs(directory)
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise AssertionError("running as root, and there is no postgres user for initdb to run as")
            os.chown(directory, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def run(self, *command):
        result = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"PostgreSQL did not start: {' '.join(command[:2])} exited {result.returncode}: "
                                 f"{(result.stderr or result.stdout).strip()}")
        return result

    def start(self):
        self.run(postgres_bin("initdb"), "-D", self.data, "--auth=trust", "--username=tuner", "--no-sync")
        self.run(postgres_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.directory, "server.log"), "-w",
                 "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off", "start")
        self.run(postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "tuner", "tune")

    def stop(self):
        subprocess.run([*self.as_user, postgres_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)


class TunePostgres(unittest.TestCase):
    def test_two_workers_share_one_study(self):
        with tempfile.TemporaryDirectory(prefix="mnist-tune-pg-") as directory:
            os.chmod(directory, 0o755)
            server = Server(os.path.join(directory, "pg"))
            try:
                server.start()
                url = f"postgresql://tuner:{PASSWORD}@127.0.0.1:{server.port}/tune"
                space = os.path.join(directory, "space.json")
                with open(space, "w") as file:
                    json.dump({"lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}, "hidden": "16"}, file)
                workers = []
                for worker, trials in (("a", 3), ("b", 4)):
                    workers.append(subprocess.Popen(
                        [BINARY, "tune", "--storage", url, "--study", "shared", "--trials", str(trials),
                         "--seed", str(len(workers) + 1), "--out", os.path.join(directory, worker), "--space", space,
                         "--", "--device", "cpu", "--train-subset", "2000", "--epochs", "2"],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                outputs = [worker.communicate(timeout=300)[0] for worker in workers]
                for worker, output in zip(workers, outputs):
                    self.assertEqual(worker.returncode, 0, output)

                study = optuna.load_study(study_name="shared", storage=url)
                trials = study.get_trials()
                self.assertEqual(len(trials), 3 + 4)
                self.assertEqual(sorted(t.number for t in trials), list(range(7)))
                self.assertEqual({t.state.name for t in trials}, {"COMPLETE"})
                # Each worker ran its own trials in its own folder.
                hosts = {}
                for t in trials:
                    hosts.setdefault(os.path.basename(os.path.dirname(os.path.dirname(t.user_attrs["run_dir"]))),
                                     []).append(t.number)
                self.assertEqual(sorted(len(v) for v in hosts.values()), [3, 4])
                for worker in ("a", "b"):
                    with open(os.path.join(directory, worker, "tune.json")) as file:
                        report = json.load(file)
                    self.assertEqual(report["storage"], f"postgresql://tuner:***@127.0.0.1:{server.port}/tune")
                    self.assertGreaterEqual(len(report["trials"]), 3)

                # The password is nowhere: not in the outputs, tune.json, tune.md or the trials' logs.
                for output in outputs:
                    self.assertNotIn(PASSWORD, output)
                for path in glob.glob(os.path.join(directory, "[ab]", "**", "*"), recursive=True):
                    if os.path.isfile(path) and not path.endswith((".ckpt", ".png")):
                        with open(path, "rb") as file:
                            self.assertNotIn(PASSWORD.encode(), file.read(), path)
            finally:
                server.stop()


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    unittest.main(verbosity=2)
