//! Small helpers for the plain responses squall itself sends (errors,
//! refusals), shared by every HTTP front.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// A plain-text response.
pub(crate) fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
