//! Object storage for the tables: a local directory by default, or an S3 bucket.
//!
//! deltalake is built without its `s3` feature (the AWS SDK); instead we build the S3 store
//! with object_store ourselves and register a small [`LogStoreFactory`] for `s3://` that
//! returns deltalake's default log store over it. Delta commits then rely on object_store's
//! conditional puts (put-if-absent) for atomicity.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use url::Url;

use crate::{Error, Result};

/// Where the tables live.
#[derive(Debug, Clone)]
pub enum StorageConfigKind {
    /// A local directory.
    Local { path: std::path::PathBuf },
    /// An S3 (or S3-compatible) bucket.
    S3(S3Config),
}

/// S3 settings, named as in Tempo's `storage.trace.s3` block.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Allow plain http endpoints.
    pub insecure: bool,
    pub forcepathstyle: bool,
}

/// The resolved storage: a store whose root is the storage root, and that root as a URL.
#[derive(Debug, Clone)]
pub struct Storage {
    pub store: Arc<dyn ObjectStore>,
    pub root_url: Url,
}

#[derive(Debug, Default)]
struct PlainLogStoreFactory;

impl LogStoreFactory for PlainLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

fn register_s3_log_store() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let url = Url::parse("s3://").expect("static url parses");
        logstore_factories().insert(url, Arc::new(PlainLogStoreFactory));
    });
}

impl Storage {
    /// Builds the store for `config`, creating a local directory when needed.
    pub fn open(config: &StorageConfigKind) -> Result<Self> {
        match config {
            StorageConfigKind::Local { path } => {
                std::fs::create_dir_all(path)?;
                let abs = std::fs::canonicalize(path)?;
                let root_url = Url::from_directory_path(&abs)
                    .map_err(|()| Error::Config(format!("storage path {} is not absolute", abs.display())))?;
                // The root store is the filesystem root: Delta resolves table paths from it.
                let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
                Ok(Self { store, root_url })
            }
            StorageConfigKind::S3(s3) => {
                register_s3_log_store();
                if s3.bucket.is_empty() {
                    return Err(Error::Config("storage.trace.s3.bucket must be set".into()));
                }
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_virtual_hosted_style_request(!s3.forcepathstyle)
                    .with_allow_http(s3.insecure)
                    .with_conditional_put(S3ConditionalPut::ETagMatch);
                if let Some(endpoint) = &s3.endpoint {
                    let endpoint = if endpoint.contains("://") {
                        endpoint.clone()
                    } else if s3.insecure {
                        format!("http://{endpoint}")
                    } else {
                        format!("https://{endpoint}")
                    };
                    builder = builder.with_endpoint(endpoint);
                }
                if let (Some(key), Some(secret)) = (&s3.access_key, &s3.secret_key) {
                    builder = builder.with_access_key_id(key).with_secret_access_key(secret);
                }
                let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
                let prefix = s3.prefix.trim_matches('/');
                let root = if prefix.is_empty() {
                    format!("s3://{}/", s3.bucket)
                } else {
                    format!("s3://{}/{prefix}/", s3.bucket)
                };
                let root_url = Url::parse(&root).map_err(|e| Error::Config(format!("bad s3 location {root}: {e}")))?;
                Ok(Self { store, root_url })
            }
        }
    }

    /// URL of the Delta table for `tenant`.
    /// `true` when `tenant`'s table has a Delta log on storage. Looks, creates nothing.
    pub async fn table_exists(&self, tenant: &str) -> Result<bool> {
        use futures::StreamExt;
        let log = self
            .table_url(tenant)?
            .join("_delta_log/")
            .map_err(|e| Error::Config(format!("bad table location for tenant {tenant}: {e}")))?;
        let prefix = object_store::path::Path::from_url_path(log.path())
            .map_err(|e| Error::Config(format!("bad table location for tenant {tenant}: {e}")))?;
        match self.store.list(Some(&prefix)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
            Some(Err(e)) => Err(e.into()),
        }
    }

    pub fn table_url(&self, tenant: &str) -> Result<Url> {
        validate_tenant(tenant)?;
        self.root_url
            .join(&format!("tenants/{tenant}/spans/"))
            .map_err(|e| Error::Config(format!("bad table location for tenant {tenant}: {e}")))
    }
}

/// The tenant of requests and connections that name none, as in Tempo.
pub const DEFAULT_TENANT: &str = "single-tenant";

/// The request header (HTTP) and metadata key (gRPC) that names the tenant.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// The tenant a request's `X-Scope-OrgID` value names: the default tenant when it is absent or
/// blank, else the value trimmed. Bytes that are not UTF-8 are kept (replaced by U+FFFD), so an
/// invalid id is refused by [`validate_tenant`] wherever it is used, never mapped to the default.
pub fn tenant_or_default(value: Option<&[u8]>) -> String {
    let text = value.map(String::from_utf8_lossy);
    match text.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => DEFAULT_TENANT.to_string(),
    }
}

/// Tenant ids name directories and Postgres databases: 1 to 150 characters of
/// `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn validate_tenant(tenant: &str) -> Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 150
        && tenant != "."
        && tenant != ".."
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTenant(tenant.into()))
    }
}
