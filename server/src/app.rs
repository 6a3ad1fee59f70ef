//! Wiring of the targets, with ordered startup (every port bound before anything runs) and a
//! bounded graceful shutdown:
//!
//! - `all`: warehouse (WAL), receivers, query servers and the HTTP API in one process;
//! - `distributor`: receivers that acknowledge once Kafka has the spans;
//! - `block-builder`: consumes Kafka into the tables, exactly once;
//! - `live-store`: consumes Kafka and serves what the tables do not hold yet;
//! - `querier`: the query servers (Tempo API, Postgres, Flight) over the tables and live-stores;
//! - `compactor`: compaction, retention and vacuum of the tables (also in-process in `all`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracehouse_postgres::{PgServerConfig, Server as PgServer};
use tracehouse_sql::{QueryEngine, QueryEngineConfig};
use tracehouse_warehouse::storage::StorageConfigKind;
use tracehouse_warehouse::wal::WalConfig;
use tracehouse_warehouse::{Warehouse, WarehouseConfig};

use tracehouse_ingest::block_builder::{self, BlockBuilderConfig};
use tracehouse_ingest::kafka::{self, KafkaStats, Producer};
use tracehouse_ingest::live_store::{self, LiveStore, LiveStoreConfig};
use tracehouse_warehouse::LiveSource;

use crate::admin::{self, AdminState};
use crate::compactor::Compactor;
use crate::config::Config;
use crate::live::{self, RemoteLiveStores};
use crate::metrics::ReceiverStats;
use crate::otlp::{self, Receiver, Sink};

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
    #[error("{0}")]
    Ingest(#[from] tracehouse_ingest::Error),
}

/// The components a process runs (`-target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    All,
    Distributor,
    BlockBuilder,
    LiveStore,
    Querier,
    Compactor,
}

impl Target {
    /// Every target name, as `-target` takes it.
    pub const NAMES: [&str; 6] = [
        "all",
        "distributor",
        "block-builder",
        "live-store",
        "querier",
        "compactor",
    ];

    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "all" => Ok(Self::All),
            "distributor" => Ok(Self::Distributor),
            "block-builder" => Ok(Self::BlockBuilder),
            "live-store" => Ok(Self::LiveStore),
            "querier" => Ok(Self::Querier),
            "compactor" => Ok(Self::Compactor),
            other => Err(format!(
                "unknown -target={other}; use one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    fn receives(self) -> bool {
        matches!(self, Self::All | Self::Distributor)
    }

    fn queries(self) -> bool {
        matches!(self, Self::All | Self::Querier)
    }
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

/// The upkeep of every tenant's table over `warehouse`, as configured.
pub fn compactor(config: &Config, warehouse: Arc<Warehouse>) -> Result<Compactor, AppError> {
    let compaction = &config.compactor.compaction;
    let upkeep = compaction.upkeep().map_err(AppError::Config)?;
    Ok(Compactor::new(
        warehouse,
        upkeep,
        config.overrides.clone(),
        compaction.compaction_cycle,
    ))
}

/// One upkeep pass (`tracehouse compact`): over `tenant`, or every tenant with a table, read
/// and committed through the tables' logs alongside whatever else runs. Returns each
/// tenant's report or error.
pub async fn compact_once(
    config: &Config,
    options: &crate::compactor::PassOptions,
    progress: &(dyn Fn(&str, tracehouse_warehouse::UpkeepProgress) + Sync),
) -> Result<Vec<(String, Result<tracehouse_warehouse::UpkeepReport, String>)>, AppError> {
    let warehouse = Warehouse::open_shared(warehouse_config(config)?, None)?;
    Ok(compactor(config, warehouse)?.pass_with(options, progress).await)
}

/// The addresses a target listens on, by role (`http`, `otlp-grpc`, `otlp-http`, `postgres`,
/// `flight`), as configured: what `-config.verify` prints and deployments must expose.
pub fn listeners(config: &Config, target: Target) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "http",
        format!(
            "{}:{}",
            config.server.http_listen_address, config.server.http_listen_port
        ),
    )];
    if target.receives() {
        let protocols = &config.distributor.receivers.otlp.protocols;
        out.push(("otlp-grpc", protocols.grpc.endpoint.clone()));
        out.push(("otlp-http", protocols.http.endpoint.clone()));
    }
    if target.queries() && config.postgres.enabled {
        out.push(("postgres", config.postgres.listen_address.clone()));
    }
    if target.queries() && config.flight.enabled {
        out.push(("flight", config.flight.listen_address.clone()));
    }
    out
}

/// Checks a configuration without opening or binding anything (`-config.verify`, and the
/// first step of [`run`]): the target exists, Kafka is configured where the target needs it,
/// and the storage settings are complete.
pub fn verify(config: &Config) -> Result<Target, AppError> {
    let target = Target::parse(config.target.as_deref().unwrap_or("all")).map_err(AppError::Config)?;
    if !matches!(target, Target::All | Target::Compactor) {
        config.ingest.kafka.validate()?;
    }
    config.compactor.compaction.upkeep().map_err(AppError::Config)?;
    if target != Target::Distributor {
        warehouse_config(config)?;
    }
    Ok(target)
}

/// Checks the configuration of a `tracehouse compact` job: its upkeep and storage settings
/// (a job listens on nothing, and the target setting means nothing to it).
pub fn verify_compact(config: &Config) -> Result<(), AppError> {
    config.compactor.compaction.upkeep().map_err(AppError::Config)?;
    warehouse_config(config).map(|_| ())
}

/// Runs the configured target until `stop` resolves, then shuts down gracefully.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), AppError> {
    let target = verify(&config)?;
    let kafka_config = config.ingest.kafka.clone();
    let kafka_stats = Arc::new(KafkaStats::default());
    let live_store = (target == Target::LiveStore).then(|| {
        Arc::new(LiveStore::new(
            &kafka_config.topic,
            LiveStoreConfig {
                max_live_bytes: config.live_store.max_live_bytes.max(1),
                prune_interval: config.live_store.prune_interval.max(Duration::from_millis(50)),
            },
        ))
    });
    let warehouse = match target {
        Target::All => Some(Warehouse::open(warehouse_config(&config)?).await?),
        Target::Distributor => None,
        Target::BlockBuilder | Target::LiveStore | Target::Compactor => {
            Some(Warehouse::open_shared(warehouse_config(&config)?, None)?)
        }
        Target::Querier => {
            let source: Option<Arc<dyn LiveSource>> = if config.querier.live_store_addresses.is_empty() {
                None
            } else {
                Some(Arc::new(
                    RemoteLiveStores::new(
                        config.querier.live_store_addresses.clone(),
                        kafka_config.topic.clone(),
                        config.querier.live_store_timeout,
                    )
                    .map_err(AppError::Config)?,
                ))
            };
            Some(Warehouse::open_shared(warehouse_config(&config)?, source)?)
        }
    };
    let producer = if target == Target::Distributor {
        Some(Arc::new(Producer::new(&kafka_config, kafka_stats.clone())?))
    } else {
        None
    };
    let stats = Arc::new(ReceiverStats::default());
    let mut admin_state = AdminState::new(stats.clone(), warehouse.clone());
    if matches!(target, Target::Distributor | Target::BlockBuilder | Target::LiveStore) {
        admin_state.kafka = Some(kafka_stats.clone());
    }
    admin_state.live_store = live_store.clone();
    let admin_state = Arc::new(admin_state);

    // Bind everything first, so a taken port fails the start with a clear message.
    let protocols = &config.distributor.receivers.otlp.protocols;
    let (http_listener, grpc_listener) = if target.receives() {
        (
            Some(bind("otlp http receiver", &protocols.http.endpoint).await?),
            Some(bind("otlp grpc receiver", &protocols.grpc.endpoint).await?),
        )
    } else {
        (None, None)
    };
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
        users: config.postgres.pg_users(),
        max_connections: config.postgres.max_connections,
        idle_timeout: config.postgres.idle_timeout,
    };
    let flight_auth = config.flight.authenticator(&config.server).map_err(AppError::Config)?;
    let server_auth =
        Arc::new(crate::config::authenticator("server.auth", &config.server.auth).map_err(AppError::Config)?);
    let flight_listener = if target.queries() && config.flight.enabled {
        Some(bind("arrow flight", &config.flight.listen_address).await?)
    } else {
        None
    };
    let pg_listener = if target.queries() && config.postgres.enabled {
        Some(bind("postgres", &config.postgres.listen_address).await?)
    } else {
        None
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // Tasks that finish their own work on shutdown (final flushes), awaited after the servers.
    let mut workers = Vec::new();

    if let (Target::All, Some(w)) = (target, &warehouse) {
        workers.push(tokio::spawn(w.clone().run_flush_loop(shutdown_rx.clone())));
    }
    let compacts = target == Target::Compactor || (target == Target::All && config.compactor.compaction.enabled);
    if let (true, Some(w)) = (compacts, &warehouse) {
        let compactor = Arc::new(compactor(&config, w.clone())?);
        tasks.push(tokio::spawn(compactor.run(shutdown_rx.clone())));
    }
    if let Some(producer) = &producer {
        let producer = producer.clone();
        let rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            producer.maintain(Duration::from_secs(2), rx).await
        }));
    }
    if matches!(target, Target::BlockBuilder | Target::LiveStore) {
        tasks.push(tokio::spawn(kafka::watch(
            kafka_config.clone(),
            kafka_stats.clone(),
            Duration::from_secs(2),
            shutdown_rx.clone(),
        )));
    }
    if let (Target::BlockBuilder, Some(w)) = (target, &warehouse) {
        let builder = BlockBuilderConfig {
            consume_cycle: config
                .block_builder
                .consume_cycle_duration
                .max(Duration::from_millis(10)),
            max_block_bytes: config.block_builder.max_block_bytes.max(1),
            instance_id: config.block_builder.instance_id.clone(),
        };
        let run = block_builder::run(
            kafka_config.clone(),
            builder,
            w.clone(),
            kafka_stats.clone(),
            shutdown_rx.clone(),
        );
        workers.push(tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(error = %e, "block-builder stopped");
            }
        }));
    }
    if let (Some(store), Some(w)) = (&live_store, &warehouse) {
        let run = live_store::run(
            store.clone(),
            kafka_config.clone(),
            w.clone(),
            kafka_stats.clone(),
            shutdown_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(error = %e, "live-store stopped");
            }
        }));
    }

    if let (Some(http), Some(grpc)) = (http_listener, grpc_listener) {
        let sink = match (&producer, &warehouse) {
            (Some(p), _) => Sink::Kafka(p.clone()),
            (None, Some(w)) => Sink::Warehouse(w.clone()),
            (None, None) => unreachable!("a receiving target has a producer or a warehouse"),
        };
        let receiver = Arc::new(Receiver {
            sink,
            stats: stats.clone(),
            max_request_bytes: config.distributor.max_request_bytes,
        });
        let guarded = axum::middleware::from_fn_with_state(server_auth.clone(), crate::auth::require);
        tasks.push(tokio::spawn(serve_http(
            http,
            otlp::http_app(receiver.clone()).layer(guarded),
            shutdown_rx.clone(),
        )));
        let grpc_auth = server_auth.clone();
        let service =
            tonic::service::interceptor::InterceptedService::new(otlp::grpc_service(receiver), move |request| {
                crate::auth::check_grpc(&grpc_auth, request)
            });
        tasks.push(tokio::spawn(serve_grpc(
            "otlp grpc",
            grpc,
            tonic::service::Routes::new(service),
            shutdown_rx.clone(),
        )));
    }

    let mut http_app = admin::app(admin_state.clone());
    if let Some(store) = &live_store {
        http_app = http_app.merge(live::routes(store.clone()));
    }
    if let (true, Some(w)) = (target.queries(), &warehouse) {
        let engine = Arc::new(QueryEngine::new(
            w.clone(),
            QueryEngineConfig {
                max_memory_bytes: config.query.max_memory_bytes,
                query_timeout: config.query.timeout,
                max_tenant_sessions: config.query.max_tenant_sessions,
                ..QueryEngineConfig::default()
            },
        )?);
        http_app = http_app.merge(tracehouse_tempo_api::app(Arc::new(tracehouse_tempo_api::ApiState {
            engine: engine.clone(),
            limits: config.query_frontend.search.limits().map_err(AppError::Config)?,
            metrics: config.query_frontend.metrics.limits().map_err(AppError::Config)?,
        })));
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
            let server = Arc::new(PgServer::new(engine.clone(), pg_config.clone()).map_err(AppError::Config)?);
            tasks.push(tokio::spawn(tracehouse_postgres::serve(
                listener,
                server,
                shutdown_rx.clone(),
            )));
        }
    }
    let http_app = http_app
        .fallback(admin::not_found)
        .layer(axum::middleware::from_fn_with_state(server_auth, crate::auth::require));
    tasks.push(tokio::spawn(serve_http(admin_listener, http_app, shutdown_rx.clone())));

    admin_state.ready.store(true, Ordering::Release);
    tracing::info!(
        target = Target::NAMES[target as usize],
        otlp_grpc = %protocols.grpc.endpoint,
        otlp_http = %protocols.http.endpoint,
        http_api = %admin_addr,
        postgres = %config.postgres.listen_address,
        flight = %config.flight.listen_address,
        kafka = %if target == Target::All { "-" } else { kafka_config.address.as_str() },
        "tracehouse ready"
    );
    stop.await;

    tracing::info!("shutting down: no new requests, finishing work in hand");
    admin_state.ready.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    let deadline = config.server.graceful_shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        for task in tasks {
            let _ = task.await;
        }
        for worker in workers {
            let _ = worker.await;
        }
        if let Some(p) = &producer {
            p.flush(Duration::from_secs(5));
        }
        match (target, &warehouse) {
            (Target::All, Some(w)) => w.shutdown().await,
            _ => Ok(0),
        }
    })
    .await;
    match drained {
        Ok(Ok(spans)) => tracing::info!(spans, "flushed; bye"),
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed; the wal keeps the spans for the next start"),
        Err(_) => tracing::error!(
            ?deadline,
            "shutdown timed out; unflushed spans stay in the wal (or in kafka) for the next start"
        ),
    }
    Ok(())
}
