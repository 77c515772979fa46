"""Kill-point driver for tests/test_killpoints.py (run as a script, not collected by pytest).

Imports torch and ferkit once, then forks one child per run so each costs no start-up: the reference
run (which counts its n output writes), and for every k in 1..n+1 a run SIGKILLed at its k-th output
write (FERKIT_TEST_KILL_AT_WRITE=k) followed by a second child that resumes it
(``ferkit.train(resume=RUN/last.pt)``, nothing else given); k = n+1 must finish without a kill. The
kill points run in LANES processes side by side. The parent never computes with torch, so forked
children start with a clean thread pool. Prints one JSON line: the exit codes.

usage: python killpoint_driver.py ROOT DATA SETTINGS_JSON [LANES]
"""

import json
import os
import sys
import traceback
from pathlib import Path

import torch

torch.set_num_threads(1)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401  (imported once here, not in every child)

from ferkit import api  # noqa: E402
from ferkit.training.outputs import KILL_ENV  # noqa: E402


def in_child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main() -> None:
    root, data, settings = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    lanes = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    kw = dict(settings, data=data, quiet=True)
    count = root / "writes.json"

    def reference():
        from ferkit.training import outputs

        api.train(out=str(root / "ref" / "run"), **kw)
        count.write_text(json.dumps(outputs._writes))  # how many kill points the run has

    codes = {"ref": in_child(reference), "kills": {}}
    if codes["ref"] != 0:
        print(json.dumps(codes))
        return
    n = json.loads(count.read_text())
    codes["writes"] = n

    def kill_point(k: int) -> list[int]:
        run = root / f"k{k:02d}" / "run"

        def killed():
            os.environ[KILL_ENV] = str(k)
            api.train(out=str(run), **kw)

        def resumed():
            if (run / "last.pt").exists():
                api.train(resume=str(run / "last.pt"))  # nothing else given: the run's own settings and folder
            else:  # killed before the first epoch was committed: nothing to resume, start again
                api.train(out=str(run), **kw)

        return [in_child(killed), in_child(resumed)]

    # k = n + 1 must finish untouched (every write was counted); the lanes run side by side
    ks = list(range(1, n + 2))

    def lane(i: int) -> None:
        out = {k: kill_point(k) for k in ks[i::lanes]}
        (root / f"lane{i}.json").write_text(json.dumps(out))

    pids = []
    for i in range(lanes):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                lane(i)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        pids.append(pid)
    codes["lanes"] = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    for i in range(lanes):
        f = root / f"lane{i}.json"
        if f.exists():
            codes["kills"].update(json.loads(f.read_text()))
    print(json.dumps(codes))


if __name__ == "__main__":
    main()
