# Sourced by scripts/serve, scripts/test, scripts/check and scripts/bench: one virtual environment in the
# checkout (.venv/), installed from a lock file in requirements/ (exact versions, every file's hash, pip
# --require-hashes) and TeleOps itself as an editable install. The install runs only when the lock file,
# pyproject.toml or the Python it was made with changed, so a restart needs no network.
# PYTHON chooses the interpreter that creates .venv/ (default: python3; Debian's /usr/bin/python3 works).

VENV="$(pwd -P)/.venv"
PYTHON="${PYTHON:-python3}"

_teleops_make_venv() {
    if ! command -v "$PYTHON" >/dev/null; then
        echo "TeleOps needs Python >= 3.11: '$PYTHON' was not found. Install python3 (apt-get install python3) or set PYTHON=/path/to/python3." >&2
        exit 1
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "TeleOps needs Python >= 3.11; $PYTHON is $("$PYTHON" -V 2>&1). Set PYTHON=/path/to/python3.11-or-newer." >&2
        exit 1
    fi
    echo "== creating the virtual environment .venv/ with $("$PYTHON" -V 2>&1) ($PYTHON)"
    local err
    if err="$("$PYTHON" -m venv "$VENV" 2>&1)"; then
        return
    fi
    rm -rf "$VENV"
    # Debian and Ubuntu ship the venv module's pip bootstrap separately (python3-venv). As root, install it;
    # otherwise say what to run. TELEOPS_NO_APT=1 never installs system packages.
    if [[ $(id -u) -eq 0 && -z "${TELEOPS_NO_APT:-}" ]] && command -v apt-get >/dev/null; then
        echo "== $PYTHON cannot create a virtual environment (no ensurepip): apt-get install python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } \
            || true
        if err="$("$PYTHON" -m venv "$VENV" 2>&1)"; then
            return
        fi
        rm -rf "$VENV"
    fi
    echo "$err" >&2
    echo "Could not create .venv/: $PYTHON has no working venv module. On Debian or Ubuntu: apt-get install python3-venv (as root), then run this again." >&2
    exit 1
}

# The lock files whose pins include LOCK's (test.lock is built with serve.lock as constraints).
_teleops_covers() {
    local installed="$1" wanted="$2"
    [[ "$installed" == "$wanted" ]] && return 0
    [[ "$installed" == "requirements/test.lock" && "$wanted" == "requirements/serve.lock" ]]
}

_teleops_stamp_of() {
    local lock="$1"
    # Every lock file counts (test.lock's pins include serve.lock's), and pyproject.toml (entry points, ranges).
    echo "$lock $(cat requirements/*.lock pyproject.toml | sha256sum | cut -c1-64) $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
}

# teleops_venv LOCK: make .venv/ match LOCK (requirements/serve.lock or requirements/test.lock), then put
# .venv/bin first on PATH.
teleops_venv() {
    local lock="$1" stamp_file="$VENV/.teleops-installed" have
    if [[ ! -x "$VENV/bin/python" ]]; then
        rm -rf "$VENV"  # none yet, or its interpreter is gone (a removed pyenv version): make it anew
        _teleops_make_venv
    fi
    have="$(cat "$stamp_file" 2>/dev/null || true)"
    local have_lock="${have%% *}"
    if [[ -n "$have" ]] && _teleops_covers "$have_lock" "$lock" \
        && [[ "$have" == "$(_teleops_stamp_of "$have_lock")" ]] \
        && "$VENV/bin/python" -c 'import teleops' 2>/dev/null; then
        echo "== dependencies: up to date ($have_lock unchanged; no install)"
    else
        if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
            echo "== .venv/ has no working pip (made by another tool, or for another Python): making it anew"
            rm -rf "$VENV"
            _teleops_make_venv
        fi
        echo "== installing the pinned dependencies of $lock into .venv/ (pip --require-hashes; once per change)"
        local started=$SECONDS
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
        echo "== installing TeleOps from this checkout into .venv/ (editable, no network)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-index -e .
        _teleops_stamp_of "$lock" >"$stamp_file"
        echo "== installed in $((SECONDS - started)) s"
    fi
    export PATH="$VENV/bin:$PATH"
}
