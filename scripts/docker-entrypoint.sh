#!/bin/sh
# Entrypoint of the Cete image: runs `cete ARGS...` (so `docker run IMAGE start
# --id=node1 ...` starts a node, and `docker run IMAGE cluster` is a client call).
# The original README wrote `docker run mosuka/cete cete start ...`: a leading
# `cete` is dropped so that form works too, and `cete-server ...` runs the server.
set -e
case "${1:-}" in
    cete) shift ;;
    cete-server) shift; exec cete-server "$@" ;;
esac
exec cete "$@"
