# Source on a GPU machine that has torch but neither Snakemake nor a pip-installed drat (the H200
# device machine): `drat` and `python` resolve to this checkout, and provenance records the commit.
#   DRAT_GIT_COMMIT=<40-hex commit> source workflow/scripts/device_env.sh
# The checkout there has no .git, hence the commit from the environment (drat/provenance.py).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .corpora ]; then export DRAT_CACHE="$PWD/.corpora"; fi   # a carried corpus cache
: "${DRAT_GIT_COMMIT:?set DRAT_GIT_COMMIT to the commit being run}"
export DRAT_GIT_COMMIT
mkdir -p /tmp/drat-bin
printf '#!/bin/sh\nexec python3 -m drat.cli "$@"\n' > /tmp/drat-bin/drat
chmod +x /tmp/drat-bin/drat
command -v python >/dev/null || ln -sf "$(command -v python3)" /tmp/drat-bin/python
export PATH="/tmp/drat-bin:$PATH"
