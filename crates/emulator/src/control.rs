//! The control plane under `/_emulator/`: JSON endpoints without auth that tests, the demo and
//! benchmarks use to seed the hub, inject faults and read what really happened.

use crate::state::{EmulatorError, FaultRule};
use crate::Emulator;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(crate) fn router() -> Router<Emulator> {
    Router::new()
        .route("/businesses/{business_id}/users", post(seed_user).get(list_users))
        .route("/businesses/{business_id}/token", post(set_token))
        .route("/faults", post(add_fault).get(list_faults).delete(clear_faults))
        .route("/requests", get(list_requests).delete(clear_requests))
        .route("/reset", post(reset))
}

fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn refuse_error(error: EmulatorError) -> Response {
    let status = match error {
        EmulatorError::DuplicateEmail(_) => StatusCode::CONFLICT,
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

async fn seed_user(
    State(emu): State<Emulator>,
    Path(business_id): Path<String>,
    body: Result<Json<SeedUser>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return refuse(StatusCode::BAD_REQUEST, rejection.body_text()),
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

async fn set_token(
    State(emu): State<Emulator>,
    Path(business_id): Path<String>,
    body: Result<Json<SetToken>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return refuse(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if body.token.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "token must not be empty");
    }
    match emu.require_token(&business_id, &body.token) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn add_fault(State(emu): State<Emulator>, body: Result<Json<FaultRule>, JsonRejection>) -> Response {
    let Json(rule) = match body {
        Ok(b) => b,
        Err(rejection) => return refuse(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match emu.add_fault(rule.clone()) {
        Ok(()) => (StatusCode::CREATED, Json(rule)).into_response(),
        Err(error) => refuse_error(error),
    }
}

async fn list_faults(State(emu): State<Emulator>) -> Response {
    Json(emu.lock().faults.clone()).into_response()
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
