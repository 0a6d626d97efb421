#!/usr/bin/env python3
"""Runs a program as NP MPI processes: launch.py NP PROGRAM [ARG ...].

Finds mpirun (or mpiexec), adds what Open MPI needs on a small machine or as root
(--oversubscribe: more processes than cores; --allow-run-as-root), and bounds the whole job by
TPX_MPI_TIMEOUT seconds (default 240): a job still running then is killed and the exit status is
124, so a hung rank fails a test instead of hanging it. Exit status: the job's.
"""
import os
import shutil
import signal
import subprocess
import sys


def command(np, argv):
    """The launcher's command line for np processes running argv."""
    launcher = shutil.which("mpirun") or shutil.which("mpiexec")
    if launcher is None:
        sys.exit("launch.py: neither mpirun nor mpiexec is on PATH; install Open MPI "
                 "(apt-get install openmpi-bin libopenmpi-dev)")
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    cmd = [launcher, "-np", str(np)]
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe", "--bind-to", "none"]
        if os.geteuid() == 0:
            cmd += ["--allow-run-as-root"]
    return cmd + list(argv)


def run(np, argv, timeout=None, **kwargs):
    """Runs the job; returns the CompletedProcess (returncode 124 when it ran past the timeout)."""
    timeout = timeout or float(os.environ.get("TPX_MPI_TIMEOUT", "240"))
    env = dict(kwargs.pop("env", os.environ), OMPI_MCA_rmaps_base_oversubscribe="1")
    if kwargs.pop("capture_output", False):
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = subprocess.Popen(command(np, argv), env=env, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, 124, out, err)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: launch.py NP PROGRAM [ARG ...]")
    result = run(int(sys.argv[1]), sys.argv[2:])
    if result.returncode == 124:
        print(f"launch.py: the job ran past {os.environ.get('TPX_MPI_TIMEOUT', '240')} s and was "
              "killed", file=sys.stderr)
    sys.exit(result.returncode)
