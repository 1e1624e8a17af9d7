//! Liveness, readiness (usable as Kubernetes probes) and the OpenAPI document.

use std::sync::Arc;

use cete_types::ErrorCode;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::with_node;
use crate::node::Node;

/// The published contract, compiled in so the binary always serves its own.
pub const OPENAPI: &str = include_str!("../../../openapi.yaml");

pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Alive unless storage failed: only a restart recovers from that, and a
    // failing liveness probe is how an orchestrator is told to restart.
    let liveness = warp::path!("v1" / "liveness_check")
        .and(warp::get())
        .and(with_node(node.clone()))
        .map(|node: Arc<Node>| match node.storage_failure() {
            None => warp::reply::json(&json!({"alive": true})).into_response(),
            Some(e) => warp::reply::with_status(
                warp::reply::json(&json!({
                    "alive": false,
                    "error": {"code": e.code(), "message": e.to_string()},
                })),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .into_response(),
        });
    let readiness = warp::path!("v1" / "readiness_check")
        .and(warp::get())
        .and(with_node(node))
        .map(|node: Arc<Node>| match node.readiness() {
            Ok(()) => warp::reply::json(&json!({"ready": true})).into_response(),
            Err(reason) => warp::reply::with_status(
                warp::reply::json(&json!({
                    "ready": false,
                    "error": {"code": ErrorCode::NotReady, "message": reason},
                })),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .into_response(),
        });
    let openapi = warp::path!("openapi.yaml").and(warp::get()).map(|| {
        let mut response = Response::new(OPENAPI.into());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
        response
    });
    liveness.or(readiness).unify().or(openapi).unify()
}
