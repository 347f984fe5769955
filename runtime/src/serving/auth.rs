//! Bearer-token authentication, as its own middleware: write routes always need the token when
//! one is configured; read routes need it with `server.protect_reads`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// Rejects requests without the right `Authorization: Bearer <token>` with 401 before they reach
/// a handler. The router puts it only on the routes that need the token (write routes, and every
/// route with `server.protect_reads`); the request metrics sit outside it, so rejections are
/// counted.
pub(super) async fn require_token(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &app.write_token
        && let Err(e) = check_token(&request, token)
    {
        return e.into_response();
    }
    next.run(request).await
}

/// Checks `Authorization: Bearer <token>`, comparing in constant time.
fn check_token(request: &Request, token: &str) -> Result<(), ApiError> {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .ok_or_else(|| {
            ApiError::unauthorized("this endpoint requires Authorization: Bearer <token>")
        })?;
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let differ = a.len() != b.len() || a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0;
    if differ {
        return Err(ApiError::unauthorized("invalid bearer token"));
    }
    Ok(())
}

/// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 7235 section 2.1).
fn bearer_credentials(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for header in ["Bearer t0k", "bearer t0k", "BEARER t0k", "Bearer  t0k"] {
            assert_eq!(bearer_credentials(header), Some("t0k"), "{header}");
        }
        assert_eq!(bearer_credentials("Basic t0k"), None);
        assert_eq!(bearer_credentials("Bearer"), None);
    }
}
