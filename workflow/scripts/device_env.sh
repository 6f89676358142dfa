# Source on a GPU machine that has torch but neither Snakemake nor a pip-installed drat (the H200
# device machine): `drat` and `python` resolve to this checkout, and provenance records the commit.
#   source workflow/scripts/device_env.sh <40-hex commit>
# The checkout there has no history of the commit being run, hence the commit from the argument
# (exported as DRAT_GIT_COMMIT, which drat/provenance.py prefers over `git rev-parse`). Not
# `DRAT_GIT_COMMIT=<c> source ...`: bash drops a prefix assignment when `source` returns, and
# provenance then silently falls back to whatever .git the copy has.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .corpora ]; then export DRAT_CACHE="$PWD/.corpora"; fi   # a carried corpus cache
DRAT_GIT_COMMIT="${1:-${DRAT_GIT_COMMIT:-}}"
if ! [[ "$DRAT_GIT_COMMIT" =~ ^[0-9a-f]{40}$ ]]; then
  echo "device_env.sh: give the 40-hex commit being run: source workflow/scripts/device_env.sh <commit>" >&2
  return 1
fi
export DRAT_GIT_COMMIT
mkdir -p /tmp/drat-bin
printf '#!/bin/sh\nexec python3 -m drat.cli "$@"\n' > /tmp/drat-bin/drat
chmod +x /tmp/drat-bin/drat
command -v python >/dev/null || ln -sf "$(command -v python3)" /tmp/drat-bin/python
export PATH="/tmp/drat-bin:$PATH"
