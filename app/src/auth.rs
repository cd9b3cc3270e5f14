//! Who is asking: a session cookie (browser), or `Authorization: Bearer`
//! with a session token or a personal API token (`obk_...`, scripts).

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
        let resolved = if token.starts_with(onebook_domain::credentials::TOKEN_PREFIX) {
            state.domain.viewer_for_api_token(&token).await
        } else {
            state.domain.viewer_for_session(&token).await
        };
        match resolved {
            Ok(viewer) => Ok(Authenticated(viewer)),
            Err(DomainError::Unauthenticated) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session expired or invalid",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// Extractor: the session token of a logged-in browser plus its user, for
/// form posts that must carry the matching CSRF token.
pub struct BrowserSession {
    pub viewer: Viewer,
    pub token: String,
}

impl BrowserSession {
    pub fn csrf(&self) -> String {
        onebook_domain::Domain::csrf_token(&self.token)
    }

    /// Form posts must echo the session's CSRF token; a cross-site form
    /// cannot know it.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), ApiError> {
        if submitted == self.csrf() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "stale or missing form token; reload the page",
            ))
        }
    }
}

impl FromRequestParts<AppState> for BrowserSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = session_token(parts)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "authentication required"))?;
        match state.domain.viewer_for_session(&token).await {
            Ok(viewer) => Ok(BrowserSession { viewer, token }),
            Err(DomainError::Unauthenticated) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session expired or invalid",
            )),
            Err(e) => Err(e.into()),
        }
    }
}
