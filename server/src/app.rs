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

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tracehouse_ingest::jaeger::ThriftProtocol;
use tracehouse_ingest::zipkin::ZipkinOptions;
use tracehouse_postgres::{PgServerConfig, Server as PgServer};
use tracehouse_sql::admission::AdmissionConfig;
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
use crate::config::{Config, ReceiverRole};
use crate::limits::Limiter;
use crate::live::{self, RemoteLiveStores};
use crate::metrics::ReceiverStats;
use crate::otlp::{self, Receiver, Sink};
use crate::overrides::Overrides;
use crate::receivers;
use tonic::service::interceptor::InterceptedService;

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

/// The shortest period a background check (flush, prune, consume cycle) may be configured
/// with: shorter ones would spin.
pub const MIN_CHECK_PERIOD: Duration = Duration::from_millis(10);

/// `value` of config key `key`, refused when zero.
fn positive(key: &str, value: usize) -> Result<(), AppError> {
    match value {
        0 => Err(AppError::Config(format!("{key} must be positive"))),
        _ => Ok(()),
    }
}

/// Duration `value` of config key `key`, refused below `min`.
fn at_least(key: &str, value: Duration, min: Duration) -> Result<(), AppError> {
    if value < min {
        return Err(AppError::Config(format!(
            "{key} {value:?} is below the minimum of {min:?}"
        )));
    }
    Ok(())
}

/// The live-store's settings, checked.
fn live_store_config(config: &Config) -> Result<LiveStoreConfig, AppError> {
    let live = &config.live_store;
    positive("live_store.max_live_bytes", live.max_live_bytes)?;
    at_least("live_store.prune_interval", live.prune_interval, MIN_CHECK_PERIOD)?;
    Ok(LiveStoreConfig {
        max_live_bytes: live.max_live_bytes,
        prune_interval: live.prune_interval,
    })
}

/// The block-builder's settings, checked.
fn block_builder_config(config: &Config) -> Result<BlockBuilderConfig, AppError> {
    let bb = &config.block_builder;
    positive("block_builder.max_block_bytes", bb.max_block_bytes)?;
    at_least(
        "block_builder.consume_cycle_duration",
        bb.consume_cycle_duration,
        MIN_CHECK_PERIOD,
    )?;
    Ok(BlockBuilderConfig {
        consume_cycle: bb.consume_cycle_duration,
        max_block_bytes: bb.max_block_bytes,
        instance_id: bb.instance_id.clone(),
    })
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
    positive("ingester.wal_queue_max_requests", ing.wal_queue_max_requests)?;
    positive("ingester.wal_group_commit_max_bytes", ing.wal_group_commit_max_bytes)?;
    at_least("ingester.flush_check_period", ing.flush_check_period, MIN_CHECK_PERIOD)?;
    Ok(WarehouseConfig {
        storage,
        wal: WalConfig {
            dir: config.wal_path(),
            segment_max_bytes: ing.wal_segment_max_bytes,
            queue_max_requests: ing.wal_queue_max_requests,
            group_commit_max_bytes: ing.wal_group_commit_max_bytes,
        },
        max_block_duration: ing.max_block_duration,
        max_block_bytes: ing.max_block_bytes,
        max_live_bytes: ing.max_live_bytes,
        flush_check_interval: ing.flush_check_period,
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
pub fn compactor(config: &Config, warehouse: Arc<Warehouse>, overrides: Arc<Overrides>) -> Result<Compactor, AppError> {
    let compaction = &config.compactor.compaction;
    let upkeep = compaction.upkeep().map_err(AppError::Config)?;
    Ok(Compactor::new(
        warehouse,
        upkeep,
        overrides,
        compaction.compaction_cycle,
    ))
}

/// The overrides in force: the defaults and the per-tenant file, read now.
pub fn overrides(config: &Config) -> Result<Overrides, AppError> {
    Overrides::load(&config.overrides, config.compactor.compaction.block_retention).map_err(AppError::Config)
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
    let overrides = Arc::new(overrides(config)?);
    Ok(compactor(config, warehouse, overrides)?
        .pass_with(options, progress)
        .await)
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
        let extra = config.distributor.receivers.extra_listeners();
        out.extend(extra.into_iter().map(|(role, addr)| (role.name(), addr)));
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
    overrides(config)?;
    if target.queries() {
        positive(
            "query.max_concurrent_queries_per_tenant",
            config.query.max_concurrent_queries_per_tenant,
        )?;
    }
    if target != Target::Distributor {
        warehouse_config(config)?;
    }
    if target.receives() {
        verify_receivers(config)?;
    }
    match target {
        Target::LiveStore => live_store_config(config).map(|_| ())?,
        Target::BlockBuilder => block_builder_config(config).map(|_| ())?,
        _ => {}
    }
    Ok(target)
}

/// UDP carries no credentials: with `server.auth` set, Jaeger's UDP protocols are refused.
fn verify_receivers(config: &Config) -> Result<(), AppError> {
    let udp = (config.distributor.receivers.extra_listeners().into_iter()).find(|(role, _)| role.is_udp());
    match udp {
        Some((role, _)) if !config.server.auth.is_empty() => Err(AppError::Config(format!(
            "distributor.receivers.jaeger: {} cannot authenticate its datagrams, and server.auth is set; \
             use thrift_http or grpc",
            role.name()
        ))),
        _ => Ok(()),
    }
}

/// Checks the configuration of a `tracehouse compact` job: its upkeep and storage settings
/// (a job listens on nothing, and the target setting means nothing to it).
pub fn verify_compact(config: &Config) -> Result<(), AppError> {
    config.compactor.compaction.upkeep().map_err(AppError::Config)?;
    warehouse_config(config).map(|_| ())
}

/// What a target runs, built and not yet started.
struct Components {
    target: Target,
    kafka: kafka::KafkaConfig,
    kafka_stats: Arc<KafkaStats>,
    warehouse: Option<Arc<Warehouse>>,
    producer: Option<Arc<Producer>>,
    live_store: Option<Arc<LiveStore>>,
    /// Where receivers hand spans: Kafka on a distributor, the warehouse in `all`.
    sink: Option<Sink>,
    stats: Arc<ReceiverStats>,
    overrides: Arc<Overrides>,
    /// The receivers' limits, on a receiving target.
    limiter: Option<Arc<Limiter>>,
    admin: Arc<AdminState>,
}

/// The ports a target listens on, all bound before anything starts.
struct Listeners {
    admin: TcpListener,
    receivers: Option<ReceiverListeners>,
    flight: Option<TcpListener>,
    postgres: Option<TcpListener>,
}

/// The receivers' ports: OTLP always, Jaeger's and Zipkin's as configured.
struct ReceiverListeners {
    otlp_http: TcpListener,
    otlp_grpc: TcpListener,
    jaeger_http: Option<TcpListener>,
    jaeger_grpc: Option<TcpListener>,
    jaeger_udp: Vec<(UdpSocket, ThriftProtocol)>,
    zipkin: Option<TcpListener>,
}

/// The started tasks: servers and loops that stop on shutdown, and workers that finish their
/// own work first (final flushes), awaited after the servers.
#[derive(Default)]
struct Tasks {
    servers: Vec<tokio::task::JoinHandle<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs the configured target until `stop` resolves, then shuts down gracefully.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), AppError> {
    let target = verify(&config)?;
    let parts = build(&config, target).await?;
    let listeners = bind_all(&config, target).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = start_workers(&config, &parts, &shutdown_rx)?;
    let server_auth =
        Arc::new(crate::config::authenticator("server.auth", &config.server.auth).map_err(AppError::Config)?);
    if let (Some(sink), Some(ports)) = (parts.sink.clone(), listeners.receivers) {
        start_receivers(&config, &parts, sink, ports, &server_auth, &shutdown_rx, &mut tasks);
    }
    let http_app = query_servers(
        &config,
        &parts,
        listeners.flight,
        listeners.postgres,
        &shutdown_rx,
        &mut tasks,
    )?
    .fallback(admin::not_found)
    .layer(axum::middleware::from_fn_with_state(server_auth, crate::auth::require))
    .layer(axum::middleware::from_fn_with_state(
        parts.admin.tempo.clone(),
        crate::tempo_metrics::track_requests,
    ));
    tasks
        .servers
        .push(tokio::spawn(serve_http(listeners.admin, http_app, shutdown_rx.clone())));

    parts.admin.ready.store(true, Ordering::Release);
    log_ready(&config, target);
    stop.await;

    tracing::info!("shutting down: no new requests, finishing work in hand");
    parts.admin.ready.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    drain(&config, parts, tasks).await;
    Ok(())
}

/// Builds what `target` runs: its warehouse view, Kafka producer, live-store and admin state.
async fn build(config: &Config, target: Target) -> Result<Components, AppError> {
    let kafka = config.ingest.kafka.clone();
    let live_store = match target {
        Target::LiveStore => Some(Arc::new(LiveStore::new(&kafka.topic, live_store_config(config)?))),
        _ => None,
    };
    let warehouse = open_warehouse(config, target).await?;
    let kafka_stats = Arc::new(KafkaStats::default());
    let producer = match target {
        Target::Distributor => Some(Arc::new(Producer::new(&kafka, kafka_stats.clone())?)),
        _ => None,
    };
    let sink = match (target, &producer, &warehouse) {
        (Target::Distributor, Some(p), _) => Some(Sink::Kafka(p.clone())),
        (Target::All, _, Some(w)) => Some(Sink::Warehouse(w.clone())),
        _ => None,
    };
    let stats = Arc::new(ReceiverStats::default());
    let overrides = Arc::new(overrides(config)?);
    let limiter =
        (target.receives()).then(|| Arc::new(Limiter::new(overrides.clone(), config.ingester.trace_idle_period)));
    let mut admin = AdminState::new(stats.clone(), warehouse.clone(), overrides.clone());
    admin.limiter = limiter.clone();
    admin.config_yaml = config.masked_yaml();
    admin.tempo.set_slos(config.query_frontend.slos());
    if matches!(target, Target::Distributor | Target::BlockBuilder | Target::LiveStore) {
        admin.kafka = Some(kafka_stats.clone());
    }
    admin.live_store = live_store.clone();
    Ok(Components {
        target,
        kafka,
        kafka_stats,
        warehouse,
        producer,
        live_store,
        sink,
        stats,
        overrides,
        limiter,
        admin: Arc::new(admin),
    })
}

/// The warehouse `target` works on: the owner of the WAL in `all`, a shared view of the tables
/// (with the live-stores' spans on a querier) elsewhere, none on a distributor.
async fn open_warehouse(config: &Config, target: Target) -> Result<Option<Arc<Warehouse>>, AppError> {
    Ok(match target {
        Target::All => Some(Warehouse::open(warehouse_config(config)?).await?),
        Target::Distributor => None,
        Target::BlockBuilder | Target::LiveStore | Target::Compactor => {
            Some(Warehouse::open_shared(warehouse_config(config)?, None)?)
        }
        Target::Querier => {
            let querier = &config.querier;
            let source: Option<Arc<dyn LiveSource>> = match querier.live_store_addresses.is_empty() {
                true => None,
                false => Some(Arc::new(
                    RemoteLiveStores::new(
                        querier.live_store_addresses.clone(),
                        config.ingest.kafka.topic.clone(),
                        querier.live_store_timeout,
                    )
                    .map_err(AppError::Config)?,
                )),
            };
            Some(Warehouse::open_shared(warehouse_config(config)?, source)?)
        }
    })
}

/// Binds every port `target` listens on, so a taken port fails the start with a clear message
/// before anything runs.
async fn bind_all(config: &Config, target: Target) -> Result<Listeners, AppError> {
    let receivers = match target.receives() {
        true => Some(bind_receivers(config).await?),
        false => None,
    };
    let admin_addr = format!(
        "{}:{}",
        config.server.http_listen_address, config.server.http_listen_port
    );
    let admin = bind("http api", &admin_addr).await?;
    let flight = match target.queries() && config.flight.enabled {
        true => Some(bind("arrow flight", &config.flight.listen_address).await?),
        false => None,
    };
    let postgres = match target.queries() && config.postgres.enabled {
        true => Some(bind("postgres", &config.postgres.listen_address).await?),
        false => None,
    };
    Ok(Listeners {
        admin,
        receivers,
        flight,
        postgres,
    })
}

/// Binds the receivers' ports, by the roles [`crate::config::ReceiversConfig::extra_listeners`]
/// names.
async fn bind_receivers(config: &Config) -> Result<ReceiverListeners, AppError> {
    let receivers = &config.distributor.receivers;
    let protocols = &receivers.otlp.protocols;
    let mut ports = ReceiverListeners {
        otlp_http: bind("otlp http receiver", &protocols.http.endpoint).await?,
        otlp_grpc: bind("otlp grpc receiver", &protocols.grpc.endpoint).await?,
        jaeger_http: None,
        jaeger_grpc: None,
        jaeger_udp: Vec::new(),
        zipkin: None,
    };
    for (role, addr) in receivers.extra_listeners() {
        match role {
            ReceiverRole::JaegerThriftHttp => {
                ports.jaeger_http = Some(bind("jaeger thrift_http receiver", &addr).await?);
            }
            ReceiverRole::JaegerGrpc => ports.jaeger_grpc = Some(bind("jaeger grpc receiver", &addr).await?),
            ReceiverRole::JaegerThriftCompactUdp => {
                let socket = bind_udp("jaeger thrift_compact receiver", &addr).await?;
                ports.jaeger_udp.push((socket, ThriftProtocol::Compact));
            }
            ReceiverRole::JaegerThriftBinaryUdp => {
                let socket = bind_udp("jaeger thrift_binary receiver", &addr).await?;
                ports.jaeger_udp.push((socket, ThriftProtocol::Binary));
            }
            ReceiverRole::Zipkin => ports.zipkin = Some(bind("zipkin receiver", &addr).await?),
        }
    }
    Ok(ports)
}

async fn bind_udp(what: &'static str, addr: &str) -> Result<UdpSocket, AppError> {
    UdpSocket::bind(addr).await.map_err(|source| AppError::Bind {
        what,
        addr: addr.to_string(),
        source,
    })
}

/// Starts the background work of the target: flushing, compaction, Kafka upkeep, the
/// block-builder and the live-store.
fn start_workers(config: &Config, c: &Components, shutdown: &watch::Receiver<bool>) -> Result<Tasks, AppError> {
    let mut tasks = Tasks::default();
    let target = c.target;
    if let (Target::All, Some(w)) = (target, &c.warehouse) {
        tasks
            .workers
            .push(tokio::spawn(w.clone().run_flush_loop(shutdown.clone())));
    }
    let compacts = target == Target::Compactor || (target == Target::All && config.compactor.compaction.enabled);
    tasks
        .servers
        .push(tokio::spawn(c.overrides.clone().run(shutdown.clone())));
    if let (true, Some(w)) = (compacts, &c.warehouse) {
        let compactor = Arc::new(compactor(config, w.clone(), c.overrides.clone())?);
        tasks.servers.push(tokio::spawn(compactor.run(shutdown.clone())));
    }
    if let Some(producer) = c.producer.clone() {
        let rx = shutdown.clone();
        tasks.servers.push(tokio::spawn(async move {
            producer.maintain(Duration::from_secs(2), rx).await
        }));
    }
    if matches!(target, Target::BlockBuilder | Target::LiveStore) {
        let watch = kafka::watch(
            c.kafka.clone(),
            c.kafka_stats.clone(),
            Duration::from_secs(2),
            shutdown.clone(),
        );
        tasks.servers.push(tokio::spawn(watch));
    }
    if let (Target::BlockBuilder, Some(w)) = (target, &c.warehouse) {
        let run = block_builder::run(
            c.kafka.clone(),
            block_builder_config(config)?,
            w.clone(),
            c.kafka_stats.clone(),
            shutdown.clone(),
        );
        tasks.workers.push(tokio::spawn(logged("block-builder", run)));
    }
    if let (Some(store), Some(w)) = (&c.live_store, &c.warehouse) {
        let run = live_store::run(
            store.clone(),
            c.kafka.clone(),
            w.clone(),
            c.kafka_stats.clone(),
            shutdown.clone(),
        );
        tasks.servers.push(tokio::spawn(logged("live-store", run)));
    }
    Ok(tasks)
}

/// `run`, its error logged as what stopped `what`.
async fn logged(what: &'static str, run: impl std::future::Future<Output = tracehouse_ingest::Result<()>>) {
    if let Err(e) = run.await {
        tracing::error!(error = %e, "{what} stopped");
    }
}

/// Starts the receivers (OTLP, and Jaeger's and Zipkin's as configured) handing spans to
/// `sink`.
fn start_receivers(
    config: &Config,
    c: &Components,
    sink: Sink,
    ports: ReceiverListeners,
    auth: &Arc<tracehouse_flight::auth::Auth>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) {
    let receiver = Arc::new(Receiver {
        sink,
        stats: c.stats.clone(),
        metrics: c.admin.tempo.clone(),
        limiter: c.limiter.clone().expect("a receiving target has a limiter"),
        max_request_bytes: config.distributor.max_request_bytes,
    });
    let http = |app: axum::Router| {
        app.layer(axum::middleware::from_fn_with_state(auth.clone(), crate::auth::require))
            .layer(axum::middleware::from_fn_with_state(
                c.admin.tempo.clone(),
                crate::tempo_metrics::track_requests,
            ))
    };
    let mut serve = |listener: TcpListener, app: axum::Router| {
        tasks
            .servers
            .push(tokio::spawn(serve_http(listener, app, shutdown.clone())))
    };
    serve(ports.otlp_http, http(otlp::http_app(receiver.clone())));
    if let Some(listener) = ports.jaeger_http {
        serve(listener, http(receivers::jaeger_http_app(receiver.clone())));
    }
    if let Some(listener) = ports.zipkin {
        let options = ZipkinOptions {
            parse_string_tags: (config.distributor.receivers.zipkin.as_ref()).is_some_and(|z| z.parse_string_tags),
        };
        let state = Arc::new(receivers::ZipkinState {
            receiver: receiver.clone(),
            options,
        });
        serve(listener, http(receivers::zipkin_app(state)));
    }
    let grpc_auth = auth.clone();
    let check = move |request| crate::auth::check_grpc(&grpc_auth, request);
    let otlp_service = InterceptedService::new(otlp::grpc_service(receiver.clone()), check.clone());
    let routes = tonic::service::Routes::new(otlp_service);
    (tasks.servers).push(tokio::spawn(serve_grpc(
        "otlp grpc",
        ports.otlp_grpc,
        routes,
        shutdown.clone(),
    )));
    if let Some(listener) = ports.jaeger_grpc {
        let service = InterceptedService::new(receivers::jaeger_grpc_service(receiver.clone()), check);
        let routes = tonic::service::Routes::new(service);
        (tasks.servers).push(tokio::spawn(serve_grpc(
            "jaeger grpc",
            listener,
            routes,
            shutdown.clone(),
        )));
    }
    for (socket, protocol) in ports.jaeger_udp {
        let udp = receivers::serve_jaeger_udp(socket, protocol, receiver.clone(), shutdown.clone());
        tasks.workers.push(tokio::spawn(udp));
    }
}

/// The HTTP API (admin endpoints, the live-store's routes, Tempo's API on a querying target),
/// after starting the Flight and Postgres servers of a querying target.
fn query_servers(
    config: &Config,
    c: &Components,
    flight: Option<TcpListener>,
    postgres: Option<TcpListener>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Result<axum::Router, AppError> {
    let mut http_app = admin::app(c.admin.clone());
    if let Some(store) = &c.live_store {
        http_app = http_app.merge(live::routes(store.clone()));
    }
    let (true, Some(w)) = (c.target.queries(), &c.warehouse) else {
        return Ok(http_app);
    };
    let engine = Arc::new(QueryEngine::new(
        w.clone(),
        QueryEngineConfig {
            max_memory_bytes: config.query.max_memory_bytes,
            query_timeout: config.query.timeout,
            max_tenant_sessions: config.query.max_tenant_sessions,
            admission: AdmissionConfig {
                max_concurrent_queries_per_tenant: config.query.max_concurrent_queries_per_tenant,
                slow_query_threshold: config.query.slow_query_threshold,
            },
            ..QueryEngineConfig::default()
        },
    )?);
    let _ = c.admin.queries.set(engine.admission().clone());
    http_app = http_app.merge(tracehouse_tempo_api::app(Arc::new(tracehouse_tempo_api::ApiState {
        engine: engine.clone(),
        limits: config.query_frontend.search.limits().map_err(AppError::Config)?,
        metrics: config.query_frontend.metrics.limits().map_err(AppError::Config)?,
        tenant_limits: c.overrides.clone(),
    })));
    if let Some(listener) = flight {
        let auth = config.flight.authenticator(&config.server).map_err(AppError::Config)?;
        let service = tracehouse_flight::service(engine.clone(), auth, c.admin.flight.clone());
        let routes = tonic::service::Routes::new(service);
        tasks.servers.push(tokio::spawn(serve_grpc(
            "arrow flight",
            listener,
            routes,
            shutdown.clone(),
        )));
    }
    if let Some(listener) = postgres {
        let server = Arc::new(PgServer::new(engine, pg_config(config)?).map_err(AppError::Config)?);
        tasks.servers.push(tokio::spawn(tracehouse_postgres::serve(
            listener,
            server,
            shutdown.clone(),
        )));
    }
    Ok(http_app)
}

/// The Postgres front's settings.
fn pg_config(config: &Config) -> Result<PgServerConfig, AppError> {
    let pg = &config.postgres;
    Ok(PgServerConfig {
        listen: pg
            .listen_address
            .parse()
            .map_err(|e| AppError::Config(format!("postgres.listen_address {:?}: {e}", pg.listen_address)))?,
        users: pg.pg_users(),
        max_connections: pg.max_connections,
        idle_timeout: pg.idle_timeout,
    })
}

fn log_ready(config: &Config, target: Target) {
    let protocols = &config.distributor.receivers.otlp.protocols;
    let server = &config.server;
    tracing::info!(
        target = Target::NAMES[target as usize],
        otlp_grpc = %protocols.grpc.endpoint,
        otlp_http = %protocols.http.endpoint,
        http_api = %format!("{}:{}", server.http_listen_address, server.http_listen_port),
        postgres = %config.postgres.listen_address,
        flight = %config.flight.listen_address,
        kafka = %if target == Target::All { "-" } else { config.ingest.kafka.address.as_str() },
        "tracehouse ready"
    );
}

/// Waits, within `server.graceful_shutdown_timeout`, for the servers to finish their requests,
/// the workers their work, the producer its deliveries and (in `all`) the final flush.
async fn drain(config: &Config, c: Components, tasks: Tasks) {
    let deadline = config.server.graceful_shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        for task in tasks.servers.into_iter().chain(tasks.workers) {
            let _ = task.await;
        }
        if let Some(p) = &c.producer {
            p.flush(Duration::from_secs(5));
        }
        match (c.target, &c.warehouse) {
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
}
