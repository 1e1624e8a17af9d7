//! One place where failures become HTTP: status, JSON body, headers.

use std::convert::Infallible;

use http::header::{HeaderValue, CONNECTION, LOCATION, RETRY_AFTER};
use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::errors::Error;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }

    pub fn into_response(self) -> Response {
        let status = self.status;
        let mut response =
            warp::reply::with_status(warp::reply::json(&self.body()), status).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status.is_server_error() {
            log::warn!("{} {}: {}", status.as_u16(), self.code, self.message);
        }
        response
    }
}

/// Maps a node error to its response. With the request's `target`, a
/// `NotLeader` becomes a 307 to the same request on the leader; without one
/// (or with no leader address to send to) it is a 503 `NoLeader`.
pub(crate) fn node_error(err: Error, target: Option<&super::RequestTarget>) -> Response {
    let status = match &err {
        Error::NotLeader(_) => StatusCode::TEMPORARY_REDIRECT,
        Error::NoLeader | Error::Timeout(_) | Error::Storage(_) | Error::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::NodeNotFound(_) => StatusCode::NOT_FOUND,
        Error::MembershipChangeInProgress | Error::QuorumLoss(_) | Error::Conflict(_) => {
            StatusCode::CONFLICT
        }
        Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        Error::PeerUnavailable(_) => StatusCode::BAD_GATEWAY,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Compacted { .. } => StatusCode::GONE,
        // Only ever sent inside a watch stream, never as a status.
        Error::WatcherTooSlow => StatusCode::SERVICE_UNAVAILABLE,
    };
    if let Error::NotLeader(hint) = &err {
        let location = target
            .filter(|_| !hint.http_address.is_empty())
            .map(|t| t.on_leader(hint));
        let Some(location) = location else {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NoLeader", err.to_string())
                .into_response();
        };
        let mut body = error_body(&err);
        body["leader"] = json!({"id": hint.id, "http_addr": hint.http_address});
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), status).into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(LOCATION, value);
        }
        if let Ok(value) = HeaderValue::from_str(&hint.id) {
            response.headers_mut().insert("x-cete-leader", value);
        }
        return response;
    }
    if let Error::Compacted { .. } = &err {
        return warp::reply::with_status(warp::reply::json(&error_body(&err)), status)
            .into_response();
    }
    ApiError::new(status, err.code(), err.to_string()).into_response()
}

/// The JSON body of a node error, as sent in a response or a stream's error
/// event: `{"error": {...}}`, plus the oldest revision for `Compacted`.
pub(crate) fn error_body(err: &Error) -> serde_json::Value {
    let mut body = json!({"error": {"code": err.code(), "message": err.to_string()}});
    if let Error::Compacted { oldest, .. } = err {
        body["oldest_revision"] = json!(oldest);
    }
    body
}

/// Routing failures (unknown path, wrong method, bad query, oversized body) as JSON.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such route")
    } else if let Some(e) = rejection.find::<super::BodyTooLarge>() {
        let mut response = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValueTooLarge",
            format!(
                "the request body is larger than the limit of {} bytes",
                e.limit
            ),
        )
        .into_response();
        // The rest of the body is not read, so the connection cannot carry another
        // request: say so, and the server closes it (lingering, see http_server).
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    } else if rejection.find::<super::BodyTimeout>().is_some() {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "the request body did not arrive within {} s",
                super::BODY_READ_TIMEOUT.as_secs()
            ),
        )
    } else if let Some(e) = rejection.find::<super::BodyUnreadable>() {
        ApiError::bad_request(
            "BadRequest",
            format!("cannot read the request body: {}", e.0),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request("InvalidArgument", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request("InvalidArgument", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MethodNotAllowed>() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            e.to_string(),
        )
    } else if let Some(e) = rejection.find::<warp::reject::UnsupportedMediaType>() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            e.to_string(),
        )
    } else {
        log::warn!("unhandled rejection: {rejection:?}");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("{rejection:?}"),
        )
    };
    Ok(err.into_response())
}
