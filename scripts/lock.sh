#!/usr/bin/env bash
# Regenerate the locks CI installs from (requirements/*.txt), after changing a dependency in pyproject.toml.
#   scripts/lock.sh            # resolve the newest versions pyproject.toml allows
#   scripts/lock.sh --upgrade-package NAME   # any extra flag goes to `uv pip compile`
# requirements/dev.txt: every package of ccgpu[dev] and of its build, pinned with hashes, for Python 3.11+ on
# any platform. requirements/tomlkit-oldest.txt: the oldest tomlkit pyproject.toml allows, for the CI step that
# runs the TOML tests against it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet 'uv>=0.5'

compile=(uv pip compile --quiet --universal --python-version 3.11 --generate-hashes
         --custom-compile-command scripts/lock.sh)
"${compile[@]}" "$@" pyproject.toml requirements/build.in --extra dev --output-file requirements/dev.txt

oldest=$(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
(spec,) = [d for d in deps if re.match(r"tomlkit\b", d)]
print("tomlkit==" + re.fullmatch(r"tomlkit\s*>=\s*([0-9.]+)", spec.split(";")[0].strip()).group(1))
PY
)
echo "$oldest" | "${compile[@]}" --no-deps - --output-file requirements/tomlkit-oldest.txt
