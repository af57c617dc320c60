//! An S3-compatible object store for cloud mode, over the `object_store` crate.
//!
//! Implements the engine's synchronous [`cntryl_midge::storage::object::ObjectStore`] seam with a private
//! current-thread tokio runtime (call it from plain threads, not from inside another async runtime). Conditional
//! writes map to S3's `If-None-Match: *` (create) and `If-Match: <etag>` (update). A request that times out after
//! being sent is reported as [`ObjectError::Ambiguous`]: the engine then reconciles instead of guessing.

use cntryl_midge::storage::object::{ObjectError, ObjectMeta as Meta, ObjectStore, PutMode};
use cntryl_midge::{Bytes, MidgeError, MidgeResult};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutOptions, PutPayload, UpdateVersion};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// An S3 bucket (AWS or any S3-compatible server) as the engine's object store.
pub struct S3ObjectStore {
    inner: Arc<dyn object_store::ObjectStore>,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
}

impl std::fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ObjectStore")
            .field("inner", &self.inner.to_string())
            .finish()
    }
}

/// Where and how to reach an S3-compatible bucket.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000`; `None` for AWS.
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Region (`us-east-1` when unset).
    pub region: Option<String>,
    /// Explicit credentials; when `None`, the standard AWS environment variables are used.
    pub credentials: Option<(String, String)>,
    /// Allow plain HTTP (only for local test servers).
    pub allow_http: bool,
    /// Per-request timeout (default 30 s).
    pub timeout: Option<Duration>,
}

fn map_err(e: object_store::Error) -> ObjectError {
    match e {
        object_store::Error::NotFound { path, .. } => ObjectError::NotFound(path),
        object_store::Error::AlreadyExists { path, .. } => ObjectError::AlreadyExists(path),
        object_store::Error::Precondition { path, .. } => ObjectError::PreconditionFailed(path),
        other => ObjectError::Other(other.to_string()),
    }
}

impl S3ObjectStore {
    /// Connects (lazily) to the bucket described by `cfg`.
    pub fn new(cfg: &S3Config) -> MidgeResult<S3ObjectStore> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_allow_http(cfg.allow_http);
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some((id, secret)) = &cfg.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let inner = b
            .build()
            .map_err(|e| MidgeError::InvalidArgument(format!("S3 configuration: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MidgeError::Internal(format!("tokio runtime: {e}")))?;
        Ok(S3ObjectStore {
            inner: Arc::new(inner),
            rt,
            timeout: cfg.timeout.unwrap_or(Duration::from_secs(30)),
        })
    }

    fn run<T>(&self, what: &str, f: impl Future<Output = object_store::Result<T>>) -> Result<T, ObjectError> {
        self.rt.block_on(async {
            match tokio::time::timeout(self.timeout, f).await {
                Ok(r) => r.map_err(map_err),
                Err(_) => Err(ObjectError::Ambiguous(format!(
                    "{what}: no answer within {:?}",
                    self.timeout
                ))),
            }
        })
    }
}

fn meta(m: object_store::ObjectMeta) -> Meta {
    Meta {
        path: m.location.to_string(),
        size: m.size,
        etag: m.e_tag.unwrap_or_default(),
    }
}

impl ObjectStore for S3ObjectStore {
    fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<Meta, ObjectError> {
        let mode = match mode {
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::IfMatch(etag) => object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(etag),
                version: None,
            }),
        };
        let size = data.len() as u64;
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let loc = ObjPath::from(path);
        let r = self.run("put", self.inner.put_opts(&loc, PutPayload::from(data), opts))?;
        Ok(Meta {
            path: path.to_string(),
            size,
            etag: r.e_tag.unwrap_or_default(),
        })
    }

    fn get(&self, path: &str) -> Result<(Bytes, Meta), ObjectError> {
        let loc = ObjPath::from(path);
        self.run("get", async {
            let r = self.inner.get(&loc).await?;
            let m = meta(r.meta.clone());
            Ok((r.bytes().await?, m))
        })
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        let size = self.head(path)?.size;
        let start = range.start.min(size);
        let end = range.end.clamp(start, size);
        if start == end {
            return Ok(Bytes::new());
        }
        self.run(
            "get_range",
            self.inner.get_range(&ObjPath::from(path), start..end),
        )
    }

    fn head(&self, path: &str) -> Result<Meta, ObjectError> {
        self.run("head", self.inner.head(&ObjPath::from(path))).map(meta)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Meta>, ObjectError> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let listed: Vec<object_store::ObjectMeta> =
            self.run("list", self.inner.list(Some(&ObjPath::from(dir))).try_collect())?;
        let mut out: Vec<Meta> = listed
            .into_iter()
            .map(meta)
            .filter(|m| m.path.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<(), ObjectError> {
        match self.run("delete", self.inner.delete(&ObjPath::from(path))) {
            Err(ObjectError::NotFound(_)) => Ok(()),
            r => r,
        }
    }
}
