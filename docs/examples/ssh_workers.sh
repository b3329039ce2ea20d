#!/bin/bash
# One dmisearch study on a few machines reached by ssh, sharing one PostgreSQL database
# (docs/distributed.md). This machine runs `dmisearch run` (which creates the study and
# prints the leaderboard at the end); each host in HOSTS runs one worker that joins it. Every
# host needs dmisearch, the plugins and the study file at the same path:
#
#   DB_URL=postgresql://user@dbhost/studies HOSTS="gpu1 gpu2 gpu3" bash docs/examples/ssh_workers.sh
set -euo pipefail
STUDY=${STUDY:-studies/quickstart.toml}
DB_URL=${DB_URL:?set DB_URL to the database, e.g. postgresql://user@dbhost/studies}
HOSTS=${HOSTS:?set HOSTS to the machines, e.g. HOSTS="gpu1 gpu2"}
DIR=${DIR:-$PWD}

for host in $HOSTS; do
    ssh "$host" "cd '$DIR' && dmisearch worker '$STUDY' --storage '$DB_URL' --wait 600 --no-progress" \
        > "worker-$host.log" 2>&1 &
done
dmisearch run "$STUDY" --storage "$DB_URL" --no-progress
wait    # the workers stop once the study has its trials; their output is in worker-*.log
