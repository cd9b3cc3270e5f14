//! The JSON API under `/api/v1`.

use crate::auth::{clear_cookie, session_cookie, session_token, Authenticated};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use onebook_domain::contact_queries::{ContactQuery, SortOrder};
use onebook_domain::contacts::{Contact, ContactCard};
use onebook_domain::links::{NewLink, Service};
use onebook_domain::DomainError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/accounts", post(sign_up))
        .route("/session", post(log_in).delete(log_out))
        .route("/me", get(me))
        .route("/account/password", axum::routing::put(change_password))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/contacts", get(list_contacts).post(create_contact))
        .route("/contacts/bulk-delete", post(bulk_delete))
        .route("/contacts/import", post(import_vcards))
        .route("/contacts/export.vcf", get(export_vcards))
        .route("/groups", get(groups))
        .route("/duplicates", get(duplicates))
        .route("/duplicates/merge", post(merge))
        .route("/merges/{id}/undo", post(undo_merge))
        .route(
            "/contacts/{id}",
            get(get_contact).put(update_contact).delete(delete_contact),
        )
        .route("/changes", get(changes))
        .route("/linked-accounts", get(list_links).post(add_link))
        .route("/linked-accounts/{id}", get(get_link).delete(remove_link))
        .route("/devices", get(list_devices))
        .route("/devices/{dev_id}", axum::routing::delete(forget_device))
        .route("/openapi.json", get(openapi))
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

/// Logs in, unless the email is throttled after too many failures (429).
pub async fn checked_log_in(
    state: &AppState,
    email: &str,
    password: &str,
) -> Result<(onebook_domain::accounts::Account, String), ApiError> {
    if let Some(wait) = state.domain.login_throttled(email).await? {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
        );
        error.retry_after = Some(wait);
        return Err(error);
    }
    match state.domain.log_in(email, password).await {
        Err(DomainError::Unauthenticated) => {
            state.domain.record_login_failure(email).await?;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong email or password",
            ))
        }
        other => Ok(other?),
    }
}

async fn log_in(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LogIn>,
) -> Result<Response, ApiError> {
    let (account, token) = checked_log_in(&state, &body.email, &body.password).await?;
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
struct ListParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    sort: SortOrder,
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
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let query = ContactQuery {
        search: params.q,
        group: params.group,
        sort: params.sort,
        offset: params.offset,
        limit: params.limit,
    };
    let page = state.domain.query_contacts(&viewer, query).await?;
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
    let id = contact_id(&id)?;
    let contact = state.domain.get_contact(&viewer, id).await?;
    Ok(with_etag(contact))
}

fn etag(version: i64) -> String {
    format!("\"v{version}\"")
}

fn with_etag(contact: Contact) -> Response {
    let tag = etag(contact.version);
    ([(header::ETAG, tag)], Json(contact)).into_response()
}

/// The version an `If-Match` header asks for: `None` without the header or
/// for `*`; an error for a tag we never issued.
fn if_match_version(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("").trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .trim_start_matches("W/")
        .trim_matches('"')
        .strip_prefix('v')
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "If-Match does not name a version of this contact",
            )
        })
}

fn contact_id(raw: &str) -> Result<Uuid, ApiError> {
    // A malformed id is as unknown as someone else's: 404 either way.
    Uuid::try_parse(raw).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not found"))
}

async fn update_contact(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let id = contact_id(&id)?;
    let wanted = if_match_version(&headers)?;
    let (body_id, card) = new_contact(body)?;
    if body_id.is_some_and(|b| b != id) {
        return Err(ApiError::bad_field("id", "does not match the URL"));
    }
    match state.domain.update_contact(&viewer, id, wanted, card).await {
        Ok(contact) => Ok(with_etag(contact)),
        Err(DomainError::Conflict(message)) => {
            Err(ApiError::new(StatusCode::PRECONDITION_FAILED, message))
        }
        Err(e) => Err(e.into()),
    }
}

async fn delete_contact(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = contact_id(&id)?;
    state.domain.delete_contact(&viewer, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkDelete {
    ids: Vec<Uuid>,
}

async fn bulk_delete(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    JsonBody(body): JsonBody<BulkDelete>,
) -> Result<Response, ApiError> {
    let outcome = state.domain.delete_contacts(&viewer, body.ids).await?;
    Ok(Json(outcome).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeParams {
    #[serde(default)]
    since: i64,
    #[serde(default = "default_change_limit")]
    limit: i64,
}

fn default_change_limit() -> i64 {
    500
}

async fn changes(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    params: Result<Query<ChangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let feed = state
        .domain
        .changes_since(&viewer, params.since, params.limit)
        .await?;
    Ok(Json(feed).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    request_parts: axum::http::request::Parts,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<Response, ApiError> {
    let keep = session_token(&request_parts);
    state
        .domain
        .change_password(
            &viewer,
            &body.current_password,
            &body.new_password,
            keep.as_deref(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_tokens(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(state.domain.list_api_tokens(&viewer).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let (token, secret) = state.domain.create_api_token(&viewer, &body.name).await?;
    let body = json!({"id": token.id, "name": token.name, "created_at": token.created_at, "token": secret});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = contact_id(&id)?;
    state.domain.revoke_api_token(&viewer, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The API's OpenAPI 3.1 description, kept beside the code and checked
/// against the running routes by `tests/openapi.rs`.
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Media types a vCard upload may come with.
const VCARD_TYPES: &[&str] = &[
    "text/vcard",
    "text/x-vcard",
    "text/directory",
    "application/octet-stream",
];

async fn import_vcards(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !VCARD_TYPES.contains(&content_type.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the .vcf file as text/vcard",
        ));
    }
    let report = state.domain.import_vcards(&viewer, &body).await?;
    let status = if report.imported == 0 && !report.errors.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

async fn export_vcards(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let version = match params.version.as_deref() {
        None => onebook_domain::vcard::Version::V30,
        Some(v) => onebook_domain::vcard::Version::from_value(v)
            .ok_or_else(|| ApiError::bad_field("version", "must be 2.1, 3.0 or 4.0"))?,
    };
    let text = state
        .domain
        .export_vcards(&viewer, version, params.group)
        .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                format!("{}; charset=utf-8", version.media_type()),
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"onebook.vcf\"".to_string(),
            ),
        ],
        text,
    )
        .into_response())
}

async fn groups(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(state.domain.groups(&viewer).await?).into_response())
}

async fn duplicates(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(state.domain.duplicate_pairs(&viewer).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeRequest {
    keep: Uuid,
    merge: Vec<Uuid>,
}

async fn merge(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    JsonBody(body): JsonBody<MergeRequest>,
) -> Result<Response, ApiError> {
    let outcome = state
        .domain
        .merge_contacts(&viewer, body.keep, body.merge)
        .await?;
    Ok(Json(outcome).into_response())
}

async fn undo_merge(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = contact_id(&id)?;
    let restored = state.domain.undo_merge(&viewer, id).await?;
    Ok(Json(json!({ "restored": restored })).into_response())
}

/// A new link. Every field is optional to serde so that a missing one is
/// reported by name, like a wrong one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLinkBody {
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

fn required(value: Option<String>, field: &str) -> Result<String, ApiError> {
    value.ok_or_else(|| ApiError::bad_field(field, "is required"))
}

async fn list_links(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(state.domain.linked_accounts(&viewer).await?).into_response())
}

async fn add_link(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    JsonBody(body): JsonBody<NewLinkBody>,
) -> Result<Response, ApiError> {
    let service = required(body.service, "service")?;
    let service = Service::parse(&service)
        .ok_or_else(|| ApiError::bad_field("service", "must be \"google\" or \"highrise\""))?;
    let link = NewLink {
        id: body.id,
        service,
        account: required(body.account, "account")?,
        secret: required(body.secret, "secret")?,
    };
    let Some(key) = state.link_key.as_deref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "linking accounts is not configured on this server",
        ));
    };
    let linked = state.domain.link_account(&viewer, key, link).await?;
    let location = format!("/api/v1/linked-accounts/{}", linked.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(linked),
    )
        .into_response())
}

async fn get_link(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = contact_id(&id)?;
    Ok(Json(state.domain.linked_account(&viewer, id).await?).into_response())
}

async fn remove_link(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = contact_id(&id)?;
    state.domain.unlink_account(&viewer, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_devices(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(state.domain.devices(&viewer).await?).into_response())
}

/// Forgets a SyncML device; its next sync is a slow sync.
async fn forget_device(
    State(state): State<AppState>,
    Authenticated(viewer): Authenticated,
    Path(dev_id): Path<String>,
) -> Result<Response, ApiError> {
    if dev_id.is_empty() || dev_id.len() > 255 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not found"));
    }
    state.domain.forget_device(&viewer, &dev_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::OPENAPI;

    /// The other half of `tests/openapi.rs`: every route and method in
    /// [`super::routes`] is in the OpenAPI document. Read from this file's
    /// source, because axum cannot list a router's routes.
    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let source = include_str!("api.rs");
        let routes = source
            .split("pub fn routes()")
            .nth(1)
            .and_then(|rest| rest.split("\n}\n").next())
            .unwrap();
        let mut seen = 0;
        for chunk in routes.split(".route(").skip(1) {
            let path = chunk.split('"').nth(1).unwrap();
            let documented = paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is routed but not documented"));
            let call = chunk.split("\n        .route").next().unwrap();
            for method in ["get", "post", "put", "delete"] {
                if call.contains(&format!("{method}(")) {
                    assert!(
                        documented.get(method).is_some(),
                        "{method} {path} is routed but not documented"
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= 28, "only {seen} routed operations found");
    }
}
