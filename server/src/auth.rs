//! `server.auth` on the HTTP API and OTLP: the same credentials as Flight's (bearer tokens,
//! basic credentials, optionally bound to a tenant), so one configuration protects every port.
//!
//! Without credentials configured every request passes. With them, a request without valid
//! credentials gets 401 (gRPC Unauthenticated); a tenant-bound credential's requests read and
//! write only its tenant: its tenant is put in `X-Scope-OrgID` when the request names none,
//! and naming another gets 403 (gRPC PermissionDenied). `/ready` and `/metrics` stay open for
//! probes and scrapers; `/status/...` (every tenant's limits, the configuration) needs a
//! credential bound to no tenant.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracehouse_flight::auth::{Auth, Denied};
use tracehouse_sql::TENANT_HEADER;

/// Paths every caller may reach.
const OPEN_PATHS: &[&str] = &["/ready", "/metrics"];

/// Axum middleware: checks a request's credentials against `auth`.
pub async fn require(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    if !auth.enabled() || OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let decision = auth.decide(
        headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes),
        headers.get(TENANT_HEADER).map(HeaderValue::as_bytes),
    );
    match decision {
        Ok((_, Some(_))) if request.uri().path().starts_with("/status") => (
            StatusCode::FORBIDDEN,
            "server status is for credentials bound to no tenant",
        )
            .into_response(),
        Ok((_, Some(tenant))) => match HeaderValue::from_str(&tenant) {
            Ok(v) => {
                request.headers_mut().insert(TENANT_HEADER, v);
                next.run(request).await
            }
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "configured tenant is not a valid header",
            )
                .into_response(),
        },
        Ok((_, None)) => next.run(request).await,
        Err(Denied::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"tracehouse\"")],
            "authentication required: send `Authorization: Bearer <token>` or `Basic <credentials>`",
        )
            .into_response(),
        Err(Denied::PermissionDenied(m)) => (StatusCode::FORBIDDEN, m).into_response(),
    }
}

/// The same check for a gRPC request (OTLP/gRPC).
pub fn check_grpc(auth: &Auth, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if !auth.enabled() {
        return Ok(request);
    }
    let md = request.metadata();
    let decision = auth.decide(
        md.get("authorization").map(|v| v.as_bytes()),
        md.get(TENANT_HEADER).map(|v| v.as_bytes()),
    );
    match decision {
        Ok((_, Some(tenant))) => {
            let value = tonic::metadata::MetadataValue::try_from(tenant.as_str())
                .map_err(|_| tonic::Status::internal("configured tenant is not a valid header"))?;
            request.metadata_mut().insert(TENANT_HEADER, value);
            Ok(request)
        }
        Ok((_, None)) => Ok(request),
        Err(Denied::Unauthenticated) => Err(tonic::Status::unauthenticated(
            "authentication required: send `authorization: Bearer <token>` or `Basic <credentials>`",
        )),
        Err(Denied::PermissionDenied(m)) => Err(tonic::Status::permission_denied(m)),
    }
}
