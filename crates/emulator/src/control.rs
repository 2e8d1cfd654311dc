//! The control plane under `/_emulator/`: JSON endpoints without auth that tests, the demo and
//! benchmarks use to seed the hub, inject faults and read what really happened.

use crate::state::{EmulatorError, FaultRule, Settings};
use crate::Emulator;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

pub(crate) fn router() -> Router<Emulator> {
    Router::new()
        .route("/businesses/{business_id}/users", post(seed_user).get(list_users))
        .route("/businesses/{business_id}/token", post(set_token))
        .route("/businesses/{business_id}/assets", post(seed_asset).get(list_assets))
        .route("/businesses/{business_id}/invitations", post(seed_invitation).get(list_invitations))
        .route("/invitations/{invitation_id}/accept", post(accept_invitation))
        .route("/settings", get(get_settings).post(set_settings))
        .route("/assets/{asset_id}/assigned_users", post(assign_asset))
        .route("/scim/users", post(seed_scim_user).get(list_scim_users))
        .route("/scim/token", post(set_scim_token))
        .route("/faults", post(add_fault).get(list_faults).delete(clear_faults))
        .route("/requests", get(list_requests).delete(clear_requests))
        .route("/reset", post(reset))
}

fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// A control body must be one JSON object: serde would also take a struct from an array
/// (`[]` as every field left out), which is not what anyone sending it meant. It is read
/// straight into `T`, so a field given twice is refused too. The error is the refusal's message.
fn object<T: DeserializeOwned>(body: Bytes) -> Result<T, String> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err("the body must be a JSON object".into());
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

fn refuse_error(error: EmulatorError) -> Response {
    let status = match error {
        EmulatorError::DuplicateEmail(_) | EmulatorError::AlreadyInvited(_) => StatusCode::CONFLICT,
        EmulatorError::NoSuchObject(_) | EmulatorError::NoSuchInvitation(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    refuse(status, error)
}

#[derive(Deserialize)]
struct SeedUser {
    email: String,
    role: String,
    #[serde(default)]
    name: Option<String>,
}

async fn seed_user(State(emu): State<Emulator>, Path(business_id): Path<String>, body: Bytes) -> Response {
    let body: SeedUser = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    match emu.seed_user(&business_id, &body.email, &body.role, body.name.as_deref()) {
        Ok(user) => (StatusCode::CREATED, Json(user)).into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn list_users(State(emu): State<Emulator>, Path(business_id): Path<String>) -> Response {
    Json(emu.users(&business_id)).into_response()
}

#[derive(Deserialize)]
struct SetToken {
    token: String,
}

async fn set_token(State(emu): State<Emulator>, Path(business_id): Path<String>, body: Bytes) -> Response {
    let body: SetToken = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    if body.token.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "token must not be empty");
    }
    match emu.require_token(&business_id, &body.token) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => refuse_error(error),
    }
}

#[derive(Deserialize)]
struct SeedAsset {
    kind: String,
    #[serde(default)]
    name: String,
}

async fn seed_asset(State(emu): State<Emulator>, Path(business_id): Path<String>, body: Bytes) -> Response {
    let body: SeedAsset = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    match emu.seed_asset(&business_id, &body.kind, &body.name) {
        Ok(asset) => (StatusCode::CREATED, Json(asset)).into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn list_assets(State(emu): State<Emulator>, Path(business_id): Path<String>) -> Response {
    Json(emu.assets(&business_id)).into_response()
}

#[derive(Deserialize)]
struct AssignAsset {
    user: String,
    tasks: Vec<String>,
}

async fn assign_asset(State(emu): State<Emulator>, Path(asset_id): Path<String>, body: Bytes) -> Response {
    let body: AssignAsset = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let tasks: Vec<&str> = body.tasks.iter().map(String::as_str).collect();
    match emu.assign_asset(&asset_id, &body.user, &tasks) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn seed_invitation(State(emu): State<Emulator>, Path(business_id): Path<String>, body: Bytes) -> Response {
    let body: SeedUser = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    match emu.seed_invitation(&business_id, &body.email, &body.role) {
        Ok(invitation) => (StatusCode::CREATED, Json(invitation)).into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn list_invitations(State(emu): State<Emulator>, Path(business_id): Path<String>) -> Response {
    Json(emu.invitations(&business_id)).into_response()
}

/// The invited person accepts (what they would do from Meta's invitation email).
async fn accept_invitation(State(emu): State<Emulator>, Path(invitation_id): Path<String>) -> Response {
    match emu.accept_invitation(&invitation_id) {
        Ok(user) => (StatusCode::CREATED, Json(user)).into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn get_settings(State(emu): State<Emulator>) -> Response {
    Json(emu.settings()).into_response()
}

/// Replaces the settings; a field left out is off.
async fn set_settings(State(emu): State<Emulator>, body: Bytes) -> Response {
    let settings: Settings = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    emu.set_settings(settings.clone());
    Json(settings).into_response()
}

#[derive(Deserialize)]
struct SeedScimUser {
    #[serde(rename = "userName")]
    user_name: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default = "yes")]
    active: bool,
    #[serde(rename = "externalId", default)]
    external_id: Option<String>,
}

fn yes() -> bool {
    true
}

async fn seed_scim_user(State(emu): State<Emulator>, body: Bytes) -> Response {
    let body: SeedScimUser = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let user = crate::ScimUser {
        id: String::new(),
        user_name: body.user_name,
        active: body.active,
        roles: body.role.into_iter().collect(),
        external_id: body.external_id,
    };
    match emu.seed_scim_account(&user) {
        Ok(user) => (StatusCode::CREATED, Json(user)).into_response(),
        Err(error) => refuse(StatusCode::CONFLICT, error),
    }
}

async fn list_scim_users(State(emu): State<Emulator>) -> Response {
    Json(emu.scim_users()).into_response()
}

async fn set_scim_token(State(emu): State<Emulator>, body: Bytes) -> Response {
    let body: SetToken = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    if body.token.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "token must not be empty");
    }
    emu.require_scim_token(&body.token);
    StatusCode::NO_CONTENT.into_response()
}

async fn add_fault(State(emu): State<Emulator>, body: Bytes) -> Response {
    let rule: FaultRule = match object(body) {
        Ok(b) => b,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    match emu.add_fault(rule.clone()) {
        Ok(()) => (StatusCode::CREATED, Json(rule)).into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn list_faults(State(emu): State<Emulator>) -> Response {
    let rules: Vec<FaultRule> = emu.lock().faults.iter().map(|f| f.rule.clone()).collect();
    Json(rules).into_response()
}

async fn clear_faults(State(emu): State<Emulator>) -> StatusCode {
    emu.clear_faults();
    StatusCode::NO_CONTENT
}

async fn list_requests(State(emu): State<Emulator>) -> Response {
    Json(emu.requests()).into_response()
}

async fn clear_requests(State(emu): State<Emulator>) -> StatusCode {
    emu.clear_requests();
    StatusCode::NO_CONTENT
}

async fn reset(State(emu): State<Emulator>) -> StatusCode {
    emu.reset();
    StatusCode::NO_CONTENT
}
