"""schemathesis against a live node: every check, a fixed seed, zero failures.

Settings (phases, seed, bounds and the few per-operation exceptions, each with its reason)
are in schemathesis.toml beside this file. SCHEMATHESIS_ARGS (split on spaces) adds
command-line options, e.g. `--max-examples=200` for a longer local run.
"""

import os
import subprocess
import sys
import tempfile
import time
import unittest

from harness import SPEC, NodeTestCase

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "schemathesis.toml")
# Far more than a run takes here (30 to 70 s on 2 busy cores), so that a hang fails
# instead of blocking CI.
RUN_TIMEOUT = 300


class Schemathesis(NodeTestCase, unittest.TestCase):
    def test_the_server_keeps_its_contract(self):
        schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        with tempfile.TemporaryDirectory(prefix="cete-schemathesis-") as reports:
            args = [
                schemathesis,
                f"--config-file={CONFIG}",
                "run",
                SPEC,
                f"--url={self.node.base_url}",
                f"--report-dir={reports}",
                "--no-color",
                *os.environ.get("SCHEMATHESIS_ARGS", "").split(),
            ]
            started = time.monotonic()
            run = subprocess.run(
                args,
                cwd=reports,  # nothing (e.g. a .hypothesis directory) lands in the clone
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
            took = time.monotonic() - started
        output = run.stdout + run.stderr
        phases = [line.strip() for line in output.splitlines() if "(in " in line and "s)" in line]
        print(f"\nschemathesis: exit {run.returncode} in {took:.1f} s; {'; '.join(phases)}", file=sys.stderr)
        summary = output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-3000:]
        print(summary, file=sys.stderr)
        self.assertEqual(run.returncode, 0, f"schemathesis found failures:\n{output}")


if __name__ == "__main__":
    unittest.main()
