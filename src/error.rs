//! API errors and how they reach the wire.
//!
//! Nacos clients match on exact statuses and bodies, so every error carries the status Nacos
//! 1.4.6 would send and a message; [`ApiError::body`] renders it as `caused: <msg>;`.

use std::fmt;

/// An error answered to a client. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The message, without the `caused: ` prefix.
    pub msg: String,
    /// How the body is framed.
    pub kind: ErrorKind,
}

/// How an error body is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    /// `caused: <msg>;` (Nacos's exception handler).
    Caused,
    /// The message as-is (filters and AccessException).
    Plain,
    /// Spring Boot's `sendError` JSON: `{"timestamp","status","error","message","path"}`.
    Servlet,
}

impl ApiError {
    /// 400: a bad parameter (Java's IllegalArgumentException).
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            msg: msg.into(),
            kind: ErrorKind::Caused,
        }
    }

    /// 403 `caused: …;`: the caller lacks the credential the endpoint needs.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        ApiError {
            status: 403,
            msg: msg.into(),
            kind: ErrorKind::Caused,
        }
    }

    /// 500: a server-side failure or a NacosException.
    pub fn server(msg: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            msg: msg.into(),
            kind: ErrorKind::Caused,
        }
    }

    /// `Param '<k>' is required.` (400), from `WebUtils.required`.
    pub fn required(key: &str) -> Self {
        Self::bad_request(format!("Param '{key}' is required."))
    }

    /// 501 `no such api:<METHOD>:<URI>` for an unknown path or method.
    pub fn no_such_api(method: &str, path: &str) -> Self {
        ApiError {
            status: 501,
            msg: format!("no such api:{method}:{path}"),
            kind: ErrorKind::Servlet,
        }
    }

    /// 503 while the server cannot take the request (overload, shutdown, not ready).
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError {
            status: 503,
            msg: msg.into(),
            kind: ErrorKind::Plain,
        }
    }

    /// 503 framed `caused: …;`, for a write the cluster cannot take now (no raft leader, not
    /// a voter): Nacos frames its own server-side write failures that way.
    pub fn unavailable_caused(msg: impl Into<String>) -> Self {
        ApiError {
            status: 503,
            msg: msg.into(),
            kind: ErrorKind::Caused,
        }
    }

    /// 413: a request body above the configured cap.
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            status: 413,
            msg: format!("request body exceeds the limit of {limit} bytes"),
            kind: ErrorKind::Caused,
        }
    }

    /// The response body, as Nacos frames it.
    pub fn body(&self, path: &str) -> String {
        match self.kind {
            ErrorKind::Caused => format!("caused: {};", self.msg),
            ErrorKind::Plain => self.msg.clone(),
            ErrorKind::Servlet => serde_json::json!({
                "timestamp": crate::clock::wall_ms(),
                "status": self.status,
                "error": crate::status::reason(self.status),
                "message": self.msg,
                "path": path,
            })
            .to_string(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.msg)
    }
}

impl std::error::Error for ApiError {}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caused_body_matches_nacos() {
        assert_eq!(
            ApiError::required("ip").body("/x"),
            "caused: Param 'ip' is required.;"
        );
        assert_eq!(ApiError::required("ip").status, 400);
    }

    #[test]
    fn servlet_body_is_json_with_path() {
        let e = ApiError::no_such_api("GET", "/nacos/v1/ns/nope");
        let v: serde_json::Value = serde_json::from_str(&e.body("/nacos/v1/ns/nope")).unwrap();
        assert_eq!(v["status"], 501);
        assert_eq!(v["message"], "no such api:GET:/nacos/v1/ns/nope");
        assert_eq!(v["path"], "/nacos/v1/ns/nope");
    }
}
