"""The sandbox's first stage, inside the child: lock it down, then exec the code's interpreter.

Run as `python -I -S jail.py SETTINGS_JSON -- ARGV...` (moaa.verify.sandbox builds the line); the
standard library only, since nothing of moaa is importable there. In order:
1. namespaces (under `unshare --user --map-root-user --mount --net --pid`): forbid further user
   namespaces, remount every mount read-only, then bind the run's folder read-write over itself;
2. drop every capability (an empty bounding set: the exec'd program, uid 0 of the namespace, gets
   none, so it cannot remount or unmount anything) and set no_new_privs;
3. resource limits (set here, inside the namespace, because RLIMIT_NPROC counts the processes of a
   user namespace: set before `unshare` it would count every process of this user on the machine);
4. fork: the child execs ARGV in the folder with only the environment given; this process reaps
   every process of the run until that child ends, then writes how it ended ({"exit": code} or
   {"signal": name}) to the status pipe, a descriptor the code never holds, so it cannot forge it.
   With a PID namespace of its own it also counts the run's processes every 10 ms and kills them
   all past the limit ({"limit": "processes"}): RLIMIT_NPROC binds no process whose user is root
   outside, and a machine that runs moaa as root would otherwise let a fork bomb through. The code
   runs at nice 19, so that a fork bomb's processes cannot starve this watchdog (or the machine).
A step that fails stops here with exit code 125 and one line on stderr: the code never runs
less contained than asked.
"""

import ctypes
import json
import os
import resource
import signal
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_RELATIME = 1024, 2048, 4096, 1 << 21
KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}  # fmt: skip
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _mount(source, target, flags):
    if _libc.mount(source and source.encode(), target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"mount {target}: {os.strerror(errno)}")


def _mounts():
    """(mount point, per-mount options) of every mount, parents first (mountinfo's order)."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for a space
            found.append((point, fields[5].split(",")))
    return found


def read_only_except(folder):
    """Every mount read-only, `folder` read-write; no user namespace can be made inside."""
    try:
        with open("/proc/sys/user/max_user_namespaces", "w") as fh:
            fh.write("0")
    except OSError as exc:
        raise SetupError(f"cannot forbid nested user namespaces: {exc.strerror}") from None
    for point, options in _mounts():
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in options:
            flags |= KEPT_FLAGS.get(option, 0)
        try:
            _mount(None, point, flags)
        except SetupError:
            if os.access(point, os.W_OK) and not _is_device_tree(point):
                raise
    _mount(folder, folder, MS_BIND)
    _mount(None, folder, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)


def _is_device_tree(point):
    # /dev and its children hold device nodes: a write to /dev/null is no write to a file system.
    return point == "/dev" or point.startswith("/dev/")


def drop_capabilities():
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError("cannot set no_new_privs")


def set_limits(limits):
    """Each limit as both soft and hard, but CPU time: its soft limit sends SIGXCPU (named in the
    status), its hard limit a second later SIGKILL. A limit the machine already sets lower stays."""
    for name, value in limits.items():
        which = getattr(resource, name)
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:
            value = min(value, ceiling)
        hard = value + 1 if name == "RLIMIT_CPU" and (ceiling == resource.RLIM_INFINITY or value < ceiling) else value
        resource.setrlimit(which, (value, hard))


def run_and_report(command, settings):
    """Run the command as a child, reap every process until it ends, report how it ended."""
    status_fd = settings.get("status_fd")
    if status_fd is not None:
        os.set_inheritable(status_fd, False)  # closed in the code's process at exec
    child = os.fork()
    if child == 0:
        try:
            os.nice(19)  # the code yields the CPU to everything else, this watchdog included
            os.chdir(settings["folder"])
            os.execve(command[0], command, settings["env"])
        except OSError as exc:
            sys.stderr.write(f"moaa sandbox: cannot run {command[0]}: {exc.strerror}\n")
            os._exit(127)
    status, over = _reap_until(child, settings.get("own_pids") and settings["limits"].get("RLIMIT_NPROC"))
    if over:
        report, code = {"limit": "processes"}, 137
    elif os.WIFSIGNALED(status):
        report, code = {"signal": _signal_name(os.WTERMSIG(status))}, 128 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
        report = {"exit": code}
    if status_fd is not None:
        os.write(status_fd, json.dumps(report).encode())
    return code


def _reap_until(child, max_processes):
    """Reap processes until `child` ends; (its wait status, whether the process limit was crossed).
    With `max_processes` (this PID namespace is the run's own), count them and, past it, kill them
    all, again at every turn until the child is gone (a process caught forking may outlive one kill)."""
    over = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG if max_processes else 0)
        except ChildProcessError:
            return 0, over
        except InterruptedError:
            continue
        if pid == child:
            if over:
                os.kill(-1, signal.SIGKILL)
            return status, over
        if pid == 0:
            over = over or sum(name.isdigit() for name in os.listdir("/proc")) - 1 > max_processes
            if over:
                os.kill(-1, signal.SIGKILL)  # every process of the namespace but this one
            time.sleep(0.001 if over else 0.01)


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def main(argv):
    settings = json.loads(argv[1])
    command = argv[argv.index("--") + 1 :]
    try:
        if settings.get("namespaces"):
            read_only_except(settings["folder"])
            drop_capabilities()
        elif sys.platform.startswith("linux") and _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SetupError("cannot set no_new_privs")
        set_limits(settings["limits"])
    except (SetupError, OSError, ValueError) as exc:
        sys.stderr.write(f"moaa sandbox setup failed: {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    os._exit(run_and_report(command, settings))


if __name__ == "__main__":
    main(sys.argv)
