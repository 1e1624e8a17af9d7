//! `/metrics` and `/v1/metrics`: the node's Prometheus text exposition
//! (`/v1/metrics` is where the original Cete served it).

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::error::node_error;
use super::with_node;
use crate::errors::Error;
use crate::metrics::{self, Metrics};
use crate::node::Node;

pub fn routes(
    node: Arc<Node>,
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .or(warp::path!("v1" / "metrics"))
        .unify()
        .and(warp::get())
        .and(with_node(node))
        .and(warp::any().map(move || metrics.clone()))
        .then(scrape)
}

async fn scrape(node: Arc<Node>, metrics: Arc<Metrics>) -> Response {
    match metrics.render(node).await {
        Ok(text) => {
            let mut response = Response::new(text.into());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        Err(e) => node_error(Error::Internal(e), None),
    }
}
