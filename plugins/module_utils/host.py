# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What host_info reads in one pass: installed packages, the state of files, tool versions.

Layer 1 reads everything it converges with one module process instead of one per package list,
file and tool (each module process costs ~0.5 s through a container connection), and its
write tasks run only where this read shows drift.
"""

import grp
import hashlib
import os
import pwd
import stat

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

# dpkg-query(1): ${db:Status-Status} is the package's current state; "installed" is the one
# state in which its files are all unpacked and configured (what package_facts lists for apt).
DPKG_QUERY = ["dpkg-query", "--show", "--showformat=${db:Status-Status} ${Package}\\n"]


def installed_packages(run_command):
    """The names of the packages dpkg reports installed."""
    rc, out, err = run_command(DPKG_QUERY)
    if rc != 0:
        raise StrataError(
            f"dpkg-query failed (rc={rc}): {err.strip() or out.strip()}; host_info reads packages on"
            " Debian-family hosts only (dpkg). Leave packages empty on other hosts.",
            error_kind="dpkg",
            rc=rc,
        )
    names = set()
    for line in out.splitlines():
        status, _sep, name = line.partition(" ")
        if status == "installed" and name:
            names.add(name)
    return names


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def stat_summary(st):
    """type (file, directory, link, other), mode ("0644"), owner and group (names, or the ids
    when they have none) of a stat result; storage_info reports the same for its paths."""
    kinds = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "link"))
    return {
        "type": next((name for test, name in kinds if test(st.st_mode)), "other"),
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
    }


def _sha1(path):
    digest = hashlib.sha1()  # what ansible.builtin.copy and stat call the checksum
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_state(path, lstat=os.lstat):
    """exists, type (file, directory, link, other), mode ("0644"), owner, group and, for a
    regular file, the SHA-1 of its content; a missing path has exists false and nulls."""
    state = {
        "path": path,
        "exists": False,
        "type": None,
        "mode": None,
        "owner": None,
        "group": None,
        "sha1": None,
    }
    try:
        st = lstat(path)
    except FileNotFoundError:
        return state
    except OSError as exc:
        raise StrataError(
            f"{path} cannot be read ({exc.strerror}): run host_info as root", error_kind="unreadable"
        ) from None
    state.update(stat_summary(st), exists=True)
    if state["type"] == "file":
        state["sha1"] = _sha1(path)
    return state


def tool_version(name, run_command):
    """``NAME --version`` as the command module registers it: rc, stdout, stderr (rc 127 when
    the tool is not on PATH)."""
    try:
        rc, out, err = run_command([name, "--version"])
    except OSError as exc:
        return {"rc": 127, "stdout": "", "stderr": f"{name}: {exc.strerror}"}
    return {"rc": rc, "stdout": out.strip(), "stderr": err.strip()}


def read(params, run_command, which):
    """host_info's result for ``params`` (packages, files, versions)."""
    relative = [p for p in params["files"] if not os.path.isabs(p)]
    if relative:
        raise StrataError(
            f"files must be absolute paths; got {', '.join(relative)}", error_kind="InvalidArgument"
        )
    result = {"changed": False, "missing_packages": [], "files": {}, "versions": {}}
    if params["packages"]:
        installed = installed_packages(run_command)
        result["missing_packages"] = [name for name in params["packages"] if name not in installed]
    result["files"] = dict((path, file_state(path)) for path in params["files"])
    for name in params["versions"]:
        found = which(name)
        if found is None:
            result["versions"][name] = {"rc": 127, "stdout": "", "stderr": f"{name}: not found on PATH"}
        else:
            result["versions"][name] = tool_version(found, run_command)
    return result
