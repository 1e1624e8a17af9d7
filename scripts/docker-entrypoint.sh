#!/bin/sh
# Entrypoint of the Cete image: runs `cete ARGS...` (so `docker run IMAGE start
# --id=node1 ...` starts a node, and `docker run IMAGE cluster` is a client call).
# The original README wrote `docker run mosuka/cete cete start ...`: a leading
# `cete` is dropped so that form works too, and `cete-server ...` runs the server.
#
# In a StatefulSet (the Helm chart), CETE_POD0_GRPC_ADDRESS names pod 0's gRPC address
# and POD_NAME is the pod's name, <statefulset>-<ordinal>: pod 0 bootstraps the cluster,
# every other pod joins through pod 0 (CETE_PEER_GRPC_ADDRESS, unless that is set).
set -e
if [ -n "${CETE_POD0_GRPC_ADDRESS:-}" ] && [ -z "${CETE_PEER_GRPC_ADDRESS:-}" ]; then
    case "${POD_NAME:-}" in
        "") echo "docker-entrypoint: CETE_POD0_GRPC_ADDRESS is set but POD_NAME is not (the pod's name, <statefulset>-<ordinal>)" >&2
            exit 2 ;;
        *-0) ;;
        *) export CETE_PEER_GRPC_ADDRESS="$CETE_POD0_GRPC_ADDRESS" ;;
    esac
fi
case "${1:-}" in
    cete) shift ;;
    cete-server) shift; exec cete-server "$@" ;;
esac
exec cete "$@"
