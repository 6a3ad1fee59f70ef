//! `tempopb.StreamingQuerier` over gRPC, for Grafana's streaming search and autocomplete.
//! Served on the HTTP port (h2c beside HTTP/1.1), the tenant in the `x-scope-orgid` metadata.
//!
//! Search runs in two jobs and streams after each: first over the most recent part of the
//! range (the last quarter of `start`..`end`, or the last hour when the request has no range),
//! then over all of it. The last message holds the complete result, as in Tempo; each
//! message's metrics say how many of the jobs are done. Tag requests and metrics query ranges
//! answer in one message.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::tempopb::streaming_querier_server::{StreamingQuerier, StreamingQuerierServer};
use crate::tempopb::{
    QueryInstantRequest, QueryInstantResponse, QueryRangeRequest, QueryRangeResponse, SearchRequest, SearchResponse,
    SearchTagValuesRequest, SearchTagValuesResponse, SearchTagValuesV2Response, SearchTagsRequest, SearchTagsResponse,
    SearchTagsV2Response,
};
use crate::{ApiError, ApiState, ErrorKind, metrics, search, tags};

/// Messages a search stream may hold before the client reads them.
pub const STREAM_QUEUE_MESSAGES: usize = 4;

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An API error's gRPC status, by its kind ([`ErrorKind`]'s one table).
pub fn status(e: ApiError) -> Status {
    Status::new(tonic::Code::from_i32(e.0.grpc_code()), e.1)
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

impl Querier {
    /// A slot for a streamed query of `tenant` ([`tracehouse_sql::admission`]), taken before
    /// the stream starts so a busy tenant's call fails with ResourceExhausted.
    fn admit(&self, tenant: &str, text: &str) -> Result<tracehouse_sql::admission::Admitted, Status> {
        (self.state.engine)
            .admit(tracehouse_sql::admission::Front::Tempo, tenant, text)
            .map_err(|e| status(crate::engine_error(e)))
    }
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
    type MetricsQueryRangeStream = Messages<QueryRangeResponse>;
    type MetricsQueryInstantStream = Messages<QueryInstantResponse>;

    /// As Tempo streams a range: a message per part of the range as it completes, newest
    /// first, holding that part's samples (dropped when the client lags behind); the last one
    /// the whole answer.
    async fn metrics_query_range(
        &self,
        request: Request<QueryRangeRequest>,
    ) -> Result<Response<Self::MetricsQueryRangeStream>, Status> {
        let tenant = tenant_of(&request);
        let metrics_request =
            metrics::grpc_request_of(request.get_ref(), self.state.metrics_limits(&tenant)).map_err(status)?;
        // Validate before streaming, so a bad query fails the call with InvalidArgument.
        tracehouse_sql::metrics::prepare(&metrics_request).map_err(|e| status(crate::engine_error(e)))?;
        let ticket = self.admit(&tenant, &metrics_request.query)?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE_MESSAGES);
        let state = self.state.clone();
        tokio::spawn(async move {
            let partial_tx = tx.clone();
            let mut progress = |o: &tracehouse_sql::metrics::MetricsOutcome| {
                let _ = partial_tx.try_send(Ok(metrics::response_of(o)));
            };
            let limits = tracehouse_sql::QueryLimits::default();
            let result = (state.engine)
                .metrics_query_range_with(&tenant, &metrics_request, &limits, Some(&mut progress))
                .await;
            let last = ticket.finish(result).map(|o| metrics::response_of(&o));
            let _ = tx.send(last.map_err(|e| status(crate::engine_error(e)))).await;
        });
        Ok(Response::new(Box::pin(tokio_stream_from(rx))))
    }

    /// One message: the whole answer.
    async fn metrics_query_instant(
        &self,
        request: Request<QueryInstantRequest>,
    ) -> Result<Response<Self::MetricsQueryInstantStream>, Status> {
        let tenant = tenant_of(&request);
        let metrics_request =
            metrics::grpc_instant_request_of(request.get_ref(), self.state.metrics_limits(&tenant)).map_err(status)?;
        let answer = metrics::run(&self.state, &tenant, &metrics_request).await;
        once(answer.map(|r| metrics::instant_response_of(&r)))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<Self::SearchStream>, Status> {
        let tenant = tenant_of(&request);
        let params = search::params_of(request.get_ref());
        // Validate before streaming, so a bad query fails the call with InvalidArgument.
        let full = search::request_of(&params, self.state.limits).map_err(status)?;
        self.state.check_search_range(&tenant, &full).map_err(status)?;
        tracehouse_traceql::compile(&full.query)
            .map_err(|e| status(ApiError(ErrorKind::InvalidInput, e.to_string())))?;
        let ticket = self.admit(&tenant, &full.query)?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE_MESSAGES);
        let state = self.state.clone();
        tokio::spawn(async move {
            // As Tempo streams: each partial message carries the traces not sent before and
            // the metrics so far (dropped when the client lags behind); the last one carries
            // the whole result.
            let mut sent = std::collections::HashSet::new();
            let partial_tx = tx.clone();
            let mut progress = |o: &tracehouse_sql::search::SearchOutcome| {
                let new = unsent(&o.hits, &mut sent);
                let _ = partial_tx.try_send(Ok(search::response_of(&new, &o.metrics)));
            };
            let result = state.engine.traceql_search_with(&tenant, &full, &mut progress).await;
            let last = match ticket.finish(result) {
                Ok(o) => Ok(search::response_of(&o.hits, &o.metrics)),
                Err(e) => Err(status(crate::engine_error(e))),
            };
            let _ = tx.send(last).await;
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

/// The hits of `hits` whose trace is not in `sent`, which then holds them too.
fn unsent(
    hits: &[tracehouse_sql::search::TraceHit],
    sent: &mut std::collections::HashSet<String>,
) -> Vec<tracehouse_sql::search::TraceHit> {
    hits.iter()
        .filter(|h| sent.insert(h.trace_id.clone()))
        .cloned()
        .collect()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<Result<T, Status>>,
) -> impl Stream<Item = Result<T, Status>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
