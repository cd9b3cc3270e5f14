//! The web UI. Logging in and out are server-rendered forms with the session
//! cookie; logged in, `/` serves a static shell plus one dependency-free
//! JavaScript module (`/ui/app.js`) that drives the JSON API. Everything is
//! embedded in the binary and served under a strict Content-Security-Policy
//! (no inline script or style). `/contacts/new` stays as a plain form post.

use crate::api::checked_log_in;
use crate::auth::{clear_cookie, session_cookie, BrowserSession};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use onebook_domain::contacts::{ContactCard, Labeled};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/login", post(log_in))
        .route("/logout", post(log_out))
        .route("/contacts/new", post(add_contact))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const APP_SHELL: &str = include_str!("../assets/ui/app.html");
const APP_JS: &str = include_str!("../assets/ui/app.js");
const APP_CSS: &str = include_str!("../assets/ui/app.css");

/// Only our own script, style and API; no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// An HTML page with the security headers every UI page carries.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · Onebook</title><link rel=\"stylesheet\" href=\"/ui/app.css\">\
             </head><body class=\"plain\"><h1>Onebook</h1>{}</body></html>",
            escape(title),
            body
        ),
    )
}

/// A static asset embedded in the binary.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The logged-in page: the shell the script fills in, with the user's email
/// and the CSRF token of the (plain form) log-out button.
fn app_shell(email: &str, csrf: &str) -> String {
    // The token first: an email cannot smuggle a placeholder into it.
    APP_SHELL
        .replace("{{CSRF}}", &escape(csrf))
        .replace("{{EMAIL}}", &escape(email))
}

fn login_form(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<p>One address book for all your contacts.</p>{error}\
         <form method=\"post\" action=\"/login\">\
         <label>Email <input name=\"email\" type=\"email\" required autocomplete=\"username\"></label>\
         <label>Password <input name=\"password\" type=\"password\" required autocomplete=\"current-password\"></label>\
         <button type=\"submit\">Log in</button></form>"
    )
}

/// A browser session, or `None` for a visitor who is not logged in.
fn logged_in(
    session: Result<BrowserSession, ApiError>,
) -> Result<Option<BrowserSession>, ApiError> {
    match session {
        Ok(session) => Ok(Some(session)),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(None),
        Err(e) => Err(e),
    }
}

async fn home(session: Result<BrowserSession, ApiError>) -> Result<Response, ApiError> {
    let Some(session) = logged_in(session)? else {
        return Ok(page(StatusCode::OK, "Log in", &login_form(None)));
    };
    Ok(html(
        StatusCode::OK,
        app_shell(&session.viewer.email, &session.csrf()),
    ))
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
}

async fn log_in(
    State(state): State<AppState>,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    match checked_log_in(&state, &form.email, &form.password).await {
        Ok((_, token)) => Ok((
            [(
                header::SET_COOKIE,
                session_cookie(&token, state.secure_cookies),
            )],
            Redirect::to("/"),
        )
            .into_response()),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(page(
            StatusCode::UNAUTHORIZED,
            "Log in",
            &login_form(Some("Wrong email or password.")),
        )),
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => Ok(page(
            StatusCode::TOO_MANY_REQUESTS,
            "Log in",
            &login_form(Some(
                "Too many failed attempts. Try again in a few minutes.",
            )),
        )),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn log_out(
    State(state): State<AppState>,
    session: Result<BrowserSession, ApiError>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    if let Some(session) = logged_in(session)? {
        session.check_csrf(&form.csrf)?;
        state.domain.log_out(&session.token).await?;
    }
    Ok((
        [(header::SET_COOKIE, clear_cookie(state.secure_cookies))],
        Redirect::to("/"),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ContactForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    organization: String,
}

fn non_empty(value: String) -> Option<String> {
    let value = value.trim().to_string();
    (!value.is_empty()).then_some(value)
}

async fn add_contact(
    State(state): State<AppState>,
    session: Result<BrowserSession, ApiError>,
    Form(form): Form<ContactForm>,
) -> Result<Response, ApiError> {
    let Some(session) = logged_in(session)? else {
        return Ok(Redirect::to("/").into_response());
    };
    session.check_csrf(&form.csrf)?;
    let viewer = session.viewer;
    let card = ContactCard {
        formatted_name: form.name,
        emails: non_empty(form.email)
            .map(|value| Labeled { value, label: None })
            .into_iter()
            .collect(),
        phones: non_empty(form.phone)
            .map(|value| Labeled { value, label: None })
            .into_iter()
            .collect(),
        organization: non_empty(form.organization),
        ..ContactCard::default()
    };
    state.domain.create_contact(&viewer, None, card).await?;
    Ok(Redirect::to("/").into_response())
}

#[cfg(test)]
mod tests {
    use super::{app_shell, escape};

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_shell_escapes_the_email_and_keeps_a_csrf_field() {
        let shell = app_shell("<b>@x.test", "abc");
        assert!(shell.contains("&lt;b&gt;@x.test"));
        assert!(shell.contains("name=\"csrf\" value=\"abc\""));
        assert!(!shell.contains("{{"));
        assert!(!shell.contains("<script>"), "no inline script");
    }
}
