//! One place where failures become HTTP: status, JSON body, headers.

use std::convert::Infallible;

use cete_types::{ErrorBody, ErrorCode, LeaderRef};
use http::header::{HeaderValue, CONNECTION, LOCATION, RETRY_AFTER};
use http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::errors::Error;

/// An error on its way to the client; its status is its code's (see
/// `cete_types::ErrorCode`).
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }

    pub fn into_response(self) -> Response {
        respond(self.body(), self.code)
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).expect("the code table holds valid statuses")
}

/// `body` with its code's status, and `Retry-After` on a 503.
fn respond(body: ErrorBody, code: ErrorCode) -> Response {
    let status = status_of(code);
    if status.is_server_error() {
        log::warn!("{} {}: {}", status.as_u16(), code, body.error.message);
    }
    let mut response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Maps a node error to its response. With the request's `target`, a
/// `NotLeader` becomes a 307 to the same request on the leader; without one
/// (or with no leader address to send to) it is a 503 `NoLeader`.
pub(crate) fn node_error(err: Error, target: Option<&super::RequestTarget>) -> Response {
    if let Error::NotLeader(hint) = &err {
        let location = target
            .filter(|_| !hint.http_address.is_empty())
            .map(|t| t.on_leader(hint));
        let Some(location) = location else {
            return ApiError::new(ErrorCode::NoLeader, err.to_string()).into_response();
        };
        let mut body = error_body(&err);
        body.leader = Some(LeaderRef {
            id: hint.id.clone(),
            http_addr: hint.http_address.clone(),
        });
        let mut response = respond(body, err.code());
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(LOCATION, value);
        }
        if let Ok(value) = HeaderValue::from_str(&hint.id) {
            response.headers_mut().insert("x-cete-leader", value);
        }
        return response;
    }
    respond(error_body(&err), err.code())
}

/// The JSON body of a node error, as sent in a response or a stream's error
/// event: `{"error": {...}}`, plus the oldest revision for `Compacted`.
pub(crate) fn error_body(err: &Error) -> ErrorBody {
    let mut body = ErrorBody::new(err.code(), err.to_string());
    if let Error::Compacted { oldest, .. } = err {
        body.oldest_revision = Some(*oldest);
    }
    body
}

/// Routing failures (unknown path, wrong method, bad query, oversized body) as JSON.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if rejection.is_not_found() {
        ApiError::new(ErrorCode::NotFound, "no such route")
    } else if let Some(e) = rejection.find::<super::BodyTooLarge>() {
        let mut response = ApiError::new(
            ErrorCode::ValueTooLarge,
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
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                super::BODY_READ_TIMEOUT.as_secs()
            ),
        )
    } else if let Some(e) = rejection.find::<super::BodyUnreadable>() {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("cannot read the request body: {}", e.0),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::new(ErrorCode::InvalidArgument, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::new(ErrorCode::InvalidArgument, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MethodNotAllowed>() {
        ApiError::new(ErrorCode::MethodNotAllowed, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::UnsupportedMediaType>() {
        ApiError::new(ErrorCode::UnsupportedMediaType, e.to_string())
    } else {
        log::warn!("unhandled rejection: {rejection:?}");
        ApiError::new(ErrorCode::BadRequest, format!("{rejection:?}"))
    };
    Ok(err.into_response())
}
