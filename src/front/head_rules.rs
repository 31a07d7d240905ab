//! The rules a request head must meet before it is routed, whatever the
//! route: RFC 9112 §3.2 requires exactly one `Host` in an HTTP/1.1 request
//! and at most one in any request, and a server answers 400 otherwise.
//!
//! A request that names its host twice is ambiguous between a proxy and the
//! server behind it (each may pick a different one), which is why the RFC
//! refuses it rather than letting the server choose.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Version};

use crate::response::text_response;

/// A broken head rule, with the 400 it is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadRule {
    /// An HTTP/1.1 request without `Host`.
    MissingHost,
    /// A request with more than one `Host` header.
    DuplicateHost,
}

impl HeadRule {
    /// 400 with a body saying which rule was broken.
    pub fn response(self) -> Response<Bytes> {
        let why = match self {
            HeadRule::MissingHost => "Missing Host header",
            HeadRule::DuplicateHost => "More than one Host header",
        };
        text_response(StatusCode::BAD_REQUEST, why)
    }
}

/// Checks the `Host` rule of RFC 9112 §3.2. HTTP/1.0 requests may leave
/// `Host` out (it was optional then), and HTTP/2 names its authority in a
/// pseudo-header instead; no request may repeat it.
pub(crate) fn check_head(request: &Request<()>) -> Result<(), HeadRule> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(HeadRule::DuplicateHost),
        (None, _) if request.version() == Version::HTTP_11 => Err(HeadRule::MissingHost),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get("/").version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn one_host_passes_none_or_two_do_not() {
        assert_eq!(check_head(&request(Version::HTTP_11, &["a"])), Ok(()));
        assert_eq!(
            check_head(&request(Version::HTTP_11, &[])),
            Err(HeadRule::MissingHost)
        );
        assert_eq!(
            check_head(&request(Version::HTTP_11, &["a", "b"])),
            Err(HeadRule::DuplicateHost)
        );
    }

    #[test]
    fn http10_and_http2_may_omit_host_but_not_repeat_it() {
        assert_eq!(check_head(&request(Version::HTTP_10, &[])), Ok(()));
        assert_eq!(check_head(&request(Version::HTTP_2, &[])), Ok(()));
        assert_eq!(
            check_head(&request(Version::HTTP_10, &["a", "a"])),
            Err(HeadRule::DuplicateHost)
        );
    }
}
