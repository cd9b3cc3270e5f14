//! Who is asking: a session cookie (browser) or `Authorization: Bearer`
//! with the same session token (scripts, tests).

use crate::error::ApiError;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use onebook_domain::accounts::Viewer;
use onebook_domain::DomainError;

pub const SESSION_COOKIE: &str = "onebook_session";

pub fn session_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_string());
        }
    }
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

pub fn session_cookie(token: &str, secure: bool) -> String {
    let max_age = onebook_domain::accounts::SESSION_LIFETIME_DAYS * 24 * 3600;
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
}

/// Extractor: the authenticated user, or 401.
pub struct Authenticated(pub Viewer);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = session_token(parts)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "authentication required"))?;
        match state.domain.viewer_for_session(&token).await {
            Ok(viewer) => Ok(Authenticated(viewer)),
            Err(DomainError::Unauthenticated) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session expired or invalid",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// Extractor: the user if logged in; for pages that show a login form.
pub struct MaybeAuthenticated(pub Option<Viewer>);

impl FromRequestParts<AppState> for MaybeAuthenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Authenticated::from_request_parts(parts, state).await {
            Ok(Authenticated(viewer)) => Ok(MaybeAuthenticated(Some(viewer))),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(MaybeAuthenticated(None)),
            Err(e) => Err(e),
        }
    }
}
