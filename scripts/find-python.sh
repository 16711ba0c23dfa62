#!/usr/bin/env bash
# The Python for the project's venv: PYTHON (the argument, `make install PYTHON=...`) if it is a supported version,
# else the newest of python3.13, python3.12, python3.11 (then python3) on PATH that runs and reports a supported
# version: a pyenv shim of a version pyenv has not selected exists but fails. The supported versions are those of
# pyproject.toml's requires-python (">=3.A,<3.B"). Prints the interpreter's path, or refuses in one line.
#   find-python.sh [PYTHON]
#   find-python.sh --venv DIR [PYTHON]   (re)creates DIR when it is missing, its Python does not run or is not
#                                        supported, or PYTHON names another version; DIR/.python holds its version
# Discovery uses shell builtins only: it runs with PATH holding nothing but the candidates (tests/test_find_python.py).
set -euo pipefail

venv=
if [[ ${1:-} == --venv ]]; then
    venv=$2
    shift 2
fi
named=${1:-}

re='requires-python = ">=3\.([0-9]+),<3\.([0-9]+)"'
[[ $(<"${BASH_SOURCE[0]%/*}/../pyproject.toml") =~ $re ]] || {
    echo "error: pyproject.toml: requires-python is not \">=3.A,<3.B\"" >&2
    exit 1
}
lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
candidates=() listed=
for ((minor = hi - 1; minor >= lo; minor--)); do
    candidates+=("python3.$minor")
    listed="3.$minor${listed:+, }$listed"
done
[[ $listed != *,* ]] || listed="${listed%, *} or ${listed##*, }" # 3.11, 3.12 or 3.13

refuse() {
    echo "error: $1; the project needs Python $listed: install one (pyenv install 3.$((hi - 1)), deadsnakes'" \
        "python3.$((hi - 1)) on Ubuntu, or uv python install 3.$((hi - 1))) and name it:" \
        "make install PYTHON=/path/to/python3.$((hi - 1))" >&2
    exit 1
}

# the major.minor version an interpreter reports, or nothing when it does not run
version() { "$1" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
supported() { [[ $1 =~ ^3\.([0-9]+)$ ]] && ((BASH_REMATCH[1] >= lo && BASH_REMATCH[1] < hi)); }

have=
if [[ -n $venv ]]; then
    have=$(version "$venv/bin/python")
    if supported "$have" && { [[ -z $named ]] || [[ $have == "$(version "$named")" ]]; }; then
        [[ -f $venv/.python && $(<"$venv/.python") == "$have" ]] || echo "$have" >"$venv/.python"
        exit 0 # the venv stays
    fi
fi

python=
if [[ -n $named ]]; then
    python=$(command -v "$named") || refuse "PYTHON=$named: no such command"
    got=$(version "$python")
    [[ -n $got ]] || refuse "PYTHON=$named does not run"
    supported "$got" || refuse "PYTHON=$named is Python $got"
else
    for candidate in "${candidates[@]}" python3; do
        path=$(command -v "$candidate") || continue
        got=$(version "$path")
        if supported "$got"; then
            python=$path
            break
        fi
    done
    [[ -n $python ]] || refuse "none of ${candidates[*]} python3 on PATH runs a supported version"
fi

if [[ -z $venv ]]; then
    echo "$python"
    exit 0
fi
if [[ -e $venv ]]; then
    [[ -f $venv/pyvenv.cfg ]] || {
        echo "error: $venv is not a venv (no pyvenv.cfg), so it is not replaced: move it, or name another VENV=" >&2
        exit 1
    }
    echo "rebuilding $venv: its Python is ${have:-missing or broken}${named:+, PYTHON=$named is $got}" >&2
    rm -rf "$venv"
fi
"$python" -m venv "$venv"
echo "$got" >"$venv/.python"
