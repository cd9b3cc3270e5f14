//! The JSON API under `/api/v1`.

use crate::auth::{clear_cookie, session_cookie, session_token, Authenticated};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use onebook_domain::contacts::ContactCard;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/accounts", post(sign_up))
        .route("/session", post(log_in).delete(log_out))
        .route("/me", get(me))
        .route("/contacts", get(list_contacts).post(create_contact))
        .route("/contacts/{id}", get(get_contact))
}

/// A JSON body whose errors name the offending field (`emails[1].value`),
/// answered with 400 rather than axum's 422, and 415 without a JSON type.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let status = e.status();
                ApiError::new(status, e.body_text())
            })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut de) {
            Ok(value) => Ok(JsonBody(value)),
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                Err(ApiError::bad_field(field, e.into_inner().to_string()))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUp {
    email: String,
    password: String,
    #[serde(default)]
    display_name: String,
}

async fn sign_up(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SignUp>,
) -> Result<Response, ApiError> {
    let account = state
        .domain
        .sign_up(&body.email, &body.password, &body.display_name)
        .await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogIn {
    email: String,
    password: String,
}

async fn log_in(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LogIn>,
) -> Result<Response, ApiError> {
    let (account, token) = state.domain.log_in(&body.email, &body.password).await?;
    let cookie = session_cookie(&token, state.secure_cookies);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({ "account": account, "token": token })),
    )
        .into_response())
}

async fn log_out(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    if let Some(token) = session_token(&parts) {
        state.domain.log_out(&token).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_cookie(state.secure_cookies))],
    )
        .into_response())
}

async fn me(Authenticated(viewer): Authenticated) -> Json<onebook_domain::accounts::Viewer> {
    Json(viewer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Paging {
    #[serde(default)]
    offset: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    50
}

async fn list_contacts(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    paging: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(paging) = paging.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let page = state
        .domain
        .list_contacts(&viewer, paging.offset, paging.limit)
        .await?;
    Ok(Json(page).into_response())
}

/// Deserializes a JSON value, naming the offending field on error.
fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::bad_field(field, e.into_inner().to_string())
    })
}

/// A new contact: the card's fields plus an optional client-chosen `id`,
/// which makes the create safe to retry. Not a `#[serde(flatten)]` struct,
/// because flatten hides the path of a bad field.
fn new_contact(mut body: serde_json::Value) -> Result<(Option<Uuid>, ContactCard), ApiError> {
    let id = match body.as_object_mut().and_then(|o| o.remove("id")) {
        None | Some(serde_json::Value::Null) => None,
        Some(id) => {
            Some(from_json_value::<Uuid>(id).map_err(|e| ApiError::bad_field("id", e.message))?)
        }
    };
    Ok((id, from_json_value(body)?))
}

async fn create_contact(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let (id, card) = new_contact(body)?;
    let contact = state.domain.create_contact(&viewer, id, card).await?;
    let location = format!("/api/v1/contacts/{}", contact.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(contact),
    )
        .into_response())
}

async fn get_contact(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // A malformed id is as unknown as someone else's: 404 either way.
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not found"))?;
    let contact = state.domain.get_contact(&viewer, id).await?;
    Ok(Json(contact).into_response())
}
