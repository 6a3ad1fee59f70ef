//! Wiring of `-target=all`: warehouse, query engine, receivers, Postgres and the HTTP API in
//! one process, with ordered startup and a bounded graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracehouse_sql::pgwire::{Handlers, PgServerConfig};
use tracehouse_sql::{QueryEngine, QueryEngineConfig};
use tracehouse_warehouse::storage::StorageConfigKind;
use tracehouse_warehouse::wal::WalConfig;
use tracehouse_warehouse::{Warehouse, WarehouseConfig};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::metrics::ReceiverStats;
use crate::otlp::{self, Receiver};

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("config: {0}")]
    Config(String),
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Warehouse(#[from] tracehouse_warehouse::Error),
    #[error("{0}")]
    Query(#[from] tracehouse_sql::Error),
}

fn warehouse_config(config: &Config) -> Result<WarehouseConfig, AppError> {
    let trace = &config.storage.trace;
    let storage = match trace.backend.as_str() {
        "local" => StorageConfigKind::Local {
            path: trace.local.path.clone(),
        },
        "s3" => StorageConfigKind::S3(trace.s3.clone()),
        other => {
            return Err(AppError::Config(format!(
                "storage.trace.backend {other:?} is not one of local, s3"
            )));
        }
    };
    let ing = &config.ingester;
    if ing.max_block_bytes == 0 || ing.max_live_bytes < ing.max_block_bytes {
        return Err(AppError::Config(
            "ingester.max_live_bytes must be at least ingester.max_block_bytes > 0".into(),
        ));
    }
    if ing.wal_queue_max_requests == 0 {
        return Err(AppError::Config(
            "ingester.wal_queue_max_requests must be positive".into(),
        ));
    }
    Ok(WarehouseConfig {
        storage,
        wal: WalConfig {
            dir: config.wal_path(),
            segment_max_bytes: ing.wal_segment_max_bytes,
            queue_max_requests: ing.wal_queue_max_requests,
            group_commit_max_bytes: ing.wal_group_commit_max_bytes.max(1),
        },
        max_block_duration: ing.max_block_duration,
        max_block_bytes: ing.max_block_bytes,
        max_live_bytes: ing.max_live_bytes,
        flush_check_interval: ing.flush_check_period.max(Duration::from_millis(10)),
    })
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, AppError> {
    let bind_err = |source| AppError::Bind {
        what,
        addr: addr.to_string(),
        source,
    };
    let parsed: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(bind_err)?
        .next()
        .ok_or_else(|| bind_err(std::io::Error::other("address resolves to nothing")))?;
    TcpListener::bind(parsed).await.map_err(bind_err)
}

/// Serves an axum router until shutdown, finishing requests in flight.
async fn serve_http(listener: TcpListener, app: axum::Router, mut shutdown: watch::Receiver<bool>) {
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "http server failed");
    }
}

/// Serves gRPC `routes` on `listener` until `shutdown` changes.
async fn serve_grpc(
    what: &'static str,
    listener: TcpListener,
    routes: tonic::service::Routes,
    mut shutdown: watch::Receiver<bool>,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let result = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "{what} server failed");
    }
}

/// Runs the monolithic server until `stop` resolves, then shuts down gracefully.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), AppError> {
    let warehouse = Warehouse::open(warehouse_config(&config)?).await?;
    let engine = Arc::new(QueryEngine::new(
        warehouse.clone(),
        QueryEngineConfig {
            max_memory_bytes: config.query.max_memory_bytes,
            ..QueryEngineConfig::default()
        },
    )?);
    let stats = Arc::new(ReceiverStats::default());
    let receiver = Arc::new(Receiver {
        warehouse: warehouse.clone(),
        stats: stats.clone(),
        max_request_bytes: config.distributor.max_request_bytes,
    });
    let admin_state = Arc::new(AdminState {
        ready: false.into(),
        receivers: stats.clone(),
        warehouse: warehouse.clone(),
        flight: Arc::default(),
    });

    // Bind everything first, so a taken port fails the start with a clear message.
    let protocols = &config.distributor.receivers.otlp.protocols;
    let http_listener = bind("otlp http receiver", &protocols.http.endpoint).await?;
    let grpc_listener = bind("otlp grpc receiver", &protocols.grpc.endpoint).await?;
    let admin_addr = format!(
        "{}:{}",
        config.server.http_listen_address, config.server.http_listen_port
    );
    let admin_listener = bind("http api", &admin_addr).await?;
    let pg_config = PgServerConfig {
        listen: config.postgres.listen_address.parse().map_err(|e| {
            AppError::Config(format!(
                "postgres.listen_address {:?}: {e}",
                config.postgres.listen_address
            ))
        })?,
        users: config.postgres.users.clone().into_iter().collect(),
        max_connections: config.postgres.max_connections,
    };
    let flight_auth = config.flight.authenticator().map_err(AppError::Config)?;
    let flight_listener = if config.flight.enabled {
        Some(bind("arrow flight", &config.flight.listen_address).await?)
    } else {
        None
    };
    let pg_listener = if config.postgres.enabled {
        Some(bind("postgres", &config.postgres.listen_address).await?)
    } else {
        None
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let flush = tokio::spawn(warehouse.clone().run_flush_loop(shutdown_rx.clone()));

    tasks.push(tokio::spawn(serve_http(
        http_listener,
        otlp::http_app(receiver.clone()),
        shutdown_rx.clone(),
    )));

    tasks.push(tokio::spawn(serve_grpc(
        "otlp grpc",
        grpc_listener,
        tonic::service::Routes::new(otlp::grpc_service(receiver.clone())),
        shutdown_rx.clone(),
    )));

    tasks.push(tokio::spawn(serve_http(
        admin_listener,
        admin::app(admin_state.clone()).merge(tracehouse_tempo_api::app(Arc::new(tracehouse_tempo_api::ApiState {
            engine: engine.clone(),
        }))),
        shutdown_rx.clone(),
    )));

    if let Some(listener) = flight_listener {
        tasks.push(tokio::spawn(serve_grpc(
            "arrow flight",
            listener,
            tonic::service::Routes::new(tracehouse_flight::service(
                engine.clone(),
                flight_auth,
                admin_state.flight.clone(),
            )),
            shutdown_rx.clone(),
        )));
    }

    if let Some(listener) = pg_listener {
        let handlers = Arc::new(Handlers::new(engine.clone(), &pg_config));
        tasks.push(tokio::spawn(tracehouse_sql::pgwire::serve(
            listener,
            handlers,
            pg_config.max_connections,
            shutdown_rx.clone(),
        )));
    }

    admin_state.ready.store(true, Ordering::Release);
    tracing::info!(
        otlp_grpc = %protocols.grpc.endpoint,
        otlp_http = %protocols.http.endpoint,
        http_api = %admin_addr,
        postgres = %config.postgres.listen_address,
        flight = %config.flight.listen_address,
        "tracehouse ready"
    );
    stop.await;

    tracing::info!("shutting down: no new requests, flushing live spans");
    admin_state.ready.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    let deadline = config.server.graceful_shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        for task in tasks {
            let _ = task.await;
        }
        let _ = flush.await;
        warehouse.shutdown().await
    })
    .await;
    match drained {
        Ok(Ok(spans)) => tracing::info!(spans, "flushed; bye"),
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed; the wal keeps the spans for the next start"),
        Err(_) => tracing::error!(
            ?deadline,
            "shutdown timed out; the wal keeps unflushed spans for the next start"
        ),
    }
    Ok(())
}
