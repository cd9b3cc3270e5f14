//! The server-rendered web UI: log in, list and add contacts. Plain HTML
//! forms, so it works in any browser without JavaScript.

use crate::api::checked_log_in;
use crate::auth::{clear_cookie, session_cookie, BrowserSession};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use onebook_domain::contacts::{ContactCard, Labeled};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
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

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Onebook</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:.3rem;border-bottom:1px solid #ddd}}\
         form.inline{{display:inline}}label{{display:block;margin:.4rem 0}}.error{{color:#b00}}\
         </style></head><body><h1>Onebook</h1>{}</body></html>",
        escape(title),
        body
    ))
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

async fn home(
    State(state): State<AppState>,
    session: Result<BrowserSession, ApiError>,
) -> Result<Response, ApiError> {
    let Some(session) = logged_in(session)? else {
        return Ok(page("Log in", &login_form(None)).into_response());
    };
    let csrf = session.csrf();
    let viewer = session.viewer;
    let contacts = state.domain.list_contacts(&viewer, 0, 500).await?;
    let mut rows = String::new();
    for contact in &contacts.contacts {
        let emails: Vec<&str> = contact
            .card
            .emails
            .iter()
            .map(|e| e.value.as_str())
            .collect();
        let phones: Vec<&str> = contact
            .card
            .phones
            .iter()
            .map(|p| p.value.as_str())
            .collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&contact.card.formatted_name),
            escape(&emails.join(", ")),
            escape(&phones.join(", ")),
            escape(contact.card.organization.as_deref().unwrap_or("")),
        ));
    }
    let body = format!(
        "<p>Logged in as {} · <form class=\"inline\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Log out</button></form></p>\
         <h2>Contacts ({})</h2><table><thead><tr><th>Name</th><th>Email</th><th>Phone</th><th>Organisation</th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <h2>Add a contact</h2><form method=\"post\" action=\"/contacts/new\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Name <input name=\"name\" required></label>\
         <label>Email <input name=\"email\" type=\"email\"></label>\
         <label>Phone <input name=\"phone\" type=\"tel\"></label>\
         <label>Organisation <input name=\"organization\"></label>\
         <button type=\"submit\">Add</button></form>",
        escape(&viewer.email),
        contacts.total
    );
    Ok(page("Contacts", &body).into_response())
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
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok((
            StatusCode::UNAUTHORIZED,
            page("Log in", &login_form(Some("Wrong email or password."))),
        )
            .into_response()),
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => Ok((
            StatusCode::TOO_MANY_REQUESTS,
            page(
                "Log in",
                &login_form(Some(
                    "Too many failed attempts. Try again in a few minutes.",
                )),
            ),
        )
            .into_response()),
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
    use super::escape;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
