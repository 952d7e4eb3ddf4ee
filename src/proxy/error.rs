//! Answers the gateway makes itself, each with a small JSON body carrying the request id.

use super::body::{full, ProxyBody};
use http::{header, HeaderValue, Response, StatusCode};

/// Why the gateway answered instead of a backend.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no route for this host and path")]
    NoRoute,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("backend has no endpoint to send to")]
    NoEndpoints,
    #[error("backend is at its connection limit and its queue is full")]
    Overloaded,
    #[error("backend failed: {0}")]
    BackendFailed(String),
    #[error("backend did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error(
        "this connection's certificate is not the one for this host; open a new connection for it"
    )]
    Misdirected,
    #[error("this host requires a client certificate, sent over HTTPS")]
    ClientCertRequired,
    /// Refused by a Policy section.
    #[error("{}", .0.message)]
    Policy(Box<crate::policy::Denial>),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            GatewayError::TooManyHeaders(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::NoEndpoints | GatewayError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BackendFailed(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::ClientCertRequired => StatusCode::FORBIDDEN,
            GatewayError::Policy(d) => d.status,
        }
    }

    /// A stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NoRoute => "no_route",
            GatewayError::BodyTooLarge(_) => "body_too_large",
            GatewayError::UriTooLong(_) => "uri_too_long",
            GatewayError::TooManyHeaders(_) => "too_many_headers",
            GatewayError::NoEndpoints => "no_endpoints",
            GatewayError::Overloaded => "backend_overloaded",
            GatewayError::BackendFailed(_) => "backend_failed",
            GatewayError::Timeout(_) => "timeout",
            GatewayError::Misdirected => "misdirected",
            GatewayError::ClientCertRequired => "client_certificate_required",
            GatewayError::Policy(d) => d.code,
        }
    }

    /// True when the connection must not be reused after this answer, because the rest of
    /// the request's bytes cannot be trusted to frame the next one.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_) | GatewayError::BodyTooLarge(_)
        )
    }

    pub fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let extra = match &self {
            GatewayError::Policy(d) => d.headers.clone(),
            _ => Vec::new(),
        };
        let body = serde_json::json!({
            "error": self.code(),
            "status": self.status().as_u16(),
            "message": self.to_string(),
            "requestId": request_id.to_str().unwrap_or_default(),
        });
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(super::headers::X_REQUEST_ID, request_id.clone());
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        for (name, value) in extra {
            headers.append(name, value);
        }
        resp
    }
}
