//! `tempopb.StreamingQuerier` over gRPC, for Grafana's streaming search and autocomplete.
//! Served on the HTTP port (h2c beside HTTP/1.1), the tenant in the `x-scope-orgid` metadata.
//!
//! Search runs in two jobs and streams after each: first over the most recent part of the
//! range (the last quarter of `start`..`end`, or the last hour when the request has no range),
//! then over all of it. The last message holds the complete result, as in Tempo; each
//! message's metrics say how many of the jobs are done. Tag requests answer in one message.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::StatusCode;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::tempopb::streaming_querier_server::{StreamingQuerier, StreamingQuerierServer};
use crate::tempopb::{
    SearchRequest, SearchResponse, SearchTagValuesRequest, SearchTagValuesResponse, SearchTagValuesV2Response,
    SearchTagsRequest, SearchTagsResponse, SearchTagsV2Response,
};
use crate::{ApiError, ApiState, search, tags};

/// Messages a search stream may hold before the client reads them.
pub const STREAM_QUEUE_MESSAGES: usize = 4;
/// Jobs of one streamed search.
const SEARCH_JOBS: u32 = 2;
/// The first job's window when the request has no range.
const RECENT_WINDOW_SECONDS: i64 = 3600;

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The one mapping from API errors to gRPC codes.
pub fn status(e: ApiError) -> Status {
    match e.0 {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Status::invalid_argument(e.1),
        StatusCode::NOT_FOUND => Status::not_found(e.1),
        StatusCode::FORBIDDEN => Status::permission_denied(e.1),
        StatusCode::UNAUTHORIZED => Status::unauthenticated(e.1),
        StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(e.1),
        StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(e.1),
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(e.1),
        s if s.as_u16() == 499 => Status::cancelled(e.1),
        _ => Status::internal(e.1),
    }
}

fn tenant_of<T>(request: &Request<T>) -> String {
    tracehouse_sql::tenant_or_default(
        request
            .metadata()
            .get(tracehouse_sql::TENANT_HEADER)
            .map(|v| v.as_bytes()),
    )
}

fn once<T: Send + 'static>(result: Result<T, ApiError>) -> Result<Response<Messages<T>>, Status> {
    let item = result.map_err(status)?;
    Ok(Response::new(Box::pin(futures::stream::once(async move { Ok(item) }))))
}

/// The gRPC service over the API state.
pub struct Querier {
    state: Arc<ApiState>,
}

/// The service, ready to merge into the HTTP router.
pub fn service(state: Arc<ApiState>) -> StreamingQuerierServer<Querier> {
    StreamingQuerierServer::new(Querier { state })
}

fn tag_params(query: &str, start: u32, end: u32, limit: u32, scope: Option<&str>) -> HashMap<String, String> {
    let mut params = HashMap::new();
    if !query.is_empty() {
        params.insert("q".to_string(), query.to_string());
    }
    if let Some(scope) = scope.filter(|s| !s.is_empty()) {
        params.insert("scope".to_string(), scope.to_string());
    }
    for (name, v) in [("start", start), ("end", end), ("limit", limit)] {
        if v > 0 {
            params.insert(name.to_string(), v.to_string());
        }
    }
    params
}

#[tonic::async_trait]
impl StreamingQuerier for Querier {
    type SearchStream = Messages<SearchResponse>;
    type SearchTagsStream = Messages<SearchTagsResponse>;
    type SearchTagsV2Stream = Messages<SearchTagsV2Response>;
    type SearchTagValuesStream = Messages<SearchTagValuesResponse>;
    type SearchTagValuesV2Stream = Messages<SearchTagValuesV2Response>;

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<Self::SearchStream>, Status> {
        let tenant = tenant_of(&request);
        let params = search::params_of(request.get_ref());
        // Validate before streaming, so a bad query fails the call with InvalidArgument.
        let full = search::request_of(&params).map_err(status)?;
        tracehouse_traceql::compile(&full.query).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE_MESSAGES);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut recent = params.clone();
            let now = now_seconds();
            let (start, end) = match (full.start_unix_nano, full.end_unix_nano) {
                (Some(s), Some(e)) => (s / 1_000_000_000, e / 1_000_000_000 - 1),
                _ => (now - RECENT_WINDOW_SECONDS, now),
            };
            recent.insert("start".into(), (end - (end - start) / 4).max(1).to_string());
            recent.insert("end".into(), end.max(1).to_string());
            for (job, params) in [(1, &recent), (SEARCH_JOBS, &params)] {
                let result = search::search(&state, &tenant, params).await.map(|mut r| {
                    if let Some(m) = r.metrics.as_mut() {
                        m.completed_jobs = job;
                        m.total_jobs = SEARCH_JOBS;
                    }
                    r
                });
                let failed = result.is_err();
                if tx.send(result.map_err(status)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream_from(rx))))
    }

    async fn search_tags(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<Self::SearchTagsStream>, Status> {
        let tenant = tenant_of(&request);
        let r = request.get_ref();
        let params = tag_params(&r.query, r.start, r.end, r.max_tags_per_scope, None);
        once(tags::tag_names(&self.state, &tenant, &params).await)
    }

    async fn search_tags_v2(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<Self::SearchTagsV2Stream>, Status> {
        let tenant = tenant_of(&request);
        let r = request.get_ref();
        let params = tag_params(&r.query, r.start, r.end, r.max_tags_per_scope, Some(&r.scope));
        once(tags::tag_scopes(&self.state, &tenant, &params).await)
    }

    async fn search_tag_values(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesStream>, Status> {
        let tenant = tenant_of(&request);
        let r = request.get_ref();
        let params = tag_params(&r.query, r.start, r.end, r.max_tag_values, None);
        once(tags::tag_values(&self.state, &tenant, &params, &r.tag_name).await)
    }

    async fn search_tag_values_v2(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesV2Stream>, Status> {
        let tenant = tenant_of(&request);
        let r = request.get_ref();
        let params = tag_params(&r.query, r.start, r.end, r.max_tag_values, None);
        once(tags::tag_values_v2(&self.state, &tenant, &params, &r.tag_name).await)
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<Result<T, Status>>,
) -> impl Stream<Item = Result<T, Status>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
