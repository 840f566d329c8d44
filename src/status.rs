//! HTTP status codes: their reason phrases. A leaf shared by the HTTP layer (status lines) and
//! the error bodies that name the phrase.

/// The reason phrase of `status`: on the status line, and as the `error` of servlet-style
/// error bodies (`Error` for a status without one here).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
