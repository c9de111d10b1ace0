//! S3 and S3-compatible object stores (MinIO, Ceph, moto, …) as a [`Bucket`], through
//! `object_store` (feature `s3`). Large files go up as multipart uploads; downloads stream to
//! their file.

use std::io::{Read, Write};
use std::path::Path;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

use super::{Bucket, Transfer};
use crate::error::{Error, Result};

/// Files up to this size are one PUT; larger ones a multipart upload of parts this size.
const MULTIPART_PART: usize = 16 * 1024 * 1024;

/// Most parts of one multipart upload in flight at once.
const MULTIPART_CONCURRENCY: usize = 4;

/// Where an S3 bucket is and how to sign for it. Credentials not given here come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …), as for the AWS CLI.
#[derive(Debug, Clone, Default)]
pub struct S3BucketConfig {
    /// The bucket's name.
    pub bucket: String,
    /// Its region (default `us-east-1`).
    pub region: Option<String>,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); `None`: AWS S3.
    pub endpoint: Option<String>,
    /// Access key id, if not from the environment.
    pub access_key_id: Option<String>,
    /// Secret access key, with `access_key_id`.
    pub secret_access_key: Option<String>,
}

/// An S3 bucket. Calls block the calling thread on the bucket's own small runtime, so they may
/// be made from any thread that is not itself running async tasks.
pub struct S3Bucket {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
    bucket: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Bucket")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl S3Bucket {
    /// The bucket `config` names (nothing is sent until the first call).
    pub fn new(config: &S3BucketConfig) -> Result<S3Bucket> {
        // Few, short retries: tiering retries whole rounds itself (backing off), and a
        // Firehose delivery retries its batch; a call must not hang for minutes on a server
        // that is down.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(15),
            ..object_store::RetryConfig::default()
        };
        // Payloads are not hashed into the signature (UNSIGNED-PAYLOAD): SHA-256 over every
        // uploaded byte would cost a core's worth of CPU at the append rates tiering keeps up
        // with; TLS protects the bytes on the way, and every segment's CRC32 recorded at upload
        // is checked on every download.
        let mut builder = AmazonS3Builder::from_env()
            .with_unsigned_payload(true)
            .with_retry(retry)
            .with_bucket_name(&config.bucket)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"));
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| Error::invalid("S3 bucket", e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shardlog-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start S3 client", Path::new(&config.bucket), e))?;
        Ok(S3Bucket {
            store,
            runtime,
            bucket: config.bucket.clone(),
            endpoint: config.endpoint.clone(),
        })
    }

    fn location(&self, key: &str) -> Result<ObjectPath> {
        ObjectPath::parse(key).map_err(|e| Error::invalid("object key", e.to_string()))
    }

    fn failed(&self, op: &'static str, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::ResourceNotFound {
                kind: "object",
                name: self.url(key),
            },
            e => Error::io(op, Path::new(&self.url(key)), std::io::Error::other(e)),
        }
    }

    /// Uploads `first` and the rest of `file` (at `path`) as a multipart upload of `key`,
    /// checksumming the parts as they go.
    async fn put_multipart(
        &self,
        key: &str,
        location: &ObjectPath,
        path: &Path,
        file: &mut std::fs::File,
        first: Vec<u8>,
    ) -> Result<Transfer> {
        let upload = self
            .store
            .put_multipart(location)
            .await
            .map_err(|e| self.failed("upload", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
        match self.write_parts(key, path, file, first, &mut writer).await {
            Ok(sent) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| self.failed("upload", key, e))?;
                Ok(sent)
            }
            Err(e) => {
                // No half-made object is left pending in the bucket.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Hands `first` and the rest of `file` to `writer` part by part; returns what was sent.
    async fn write_parts(
        &self,
        key: &str,
        path: &Path,
        file: &mut std::fs::File,
        first: Vec<u8>,
        writer: &mut WriteMultipart,
    ) -> Result<Transfer> {
        let mut crc = crc32fast::Hasher::new();
        let mut len = 0u64;
        let mut chunk = first;
        while !chunk.is_empty() {
            writer
                .wait_for_capacity(MULTIPART_CONCURRENCY)
                .await
                .map_err(|e| self.failed("upload", key, e))?;
            crc.update(&chunk);
            len += chunk.len() as u64;
            writer.put(bytes::Bytes::from(chunk));
            chunk = vec![0; MULTIPART_PART];
            let n = read_full(file, &mut chunk).map_err(Error::io_at("read", path))?;
            chunk.truncate(n);
        }
        Ok(Transfer {
            len,
            crc32: crc.finalize(),
        })
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

impl Bucket for S3Bucket {
    fn put_file(&self, key: &str, path: &Path) -> Result<Transfer> {
        let location = self.location(key)?;
        let mut file = std::fs::File::open(path).map_err(Error::io_at("open", path))?;
        let len = file.metadata().map_err(Error::io_at("stat", path))?.len();
        // The CRC is of the bytes read for the upload, so it vouches for what was sent.
        let mut first = vec![0; (len as usize).min(MULTIPART_PART)];
        let n = read_full(&mut file, &mut first).map_err(Error::io_at("read", path))?;
        first.truncate(n);
        if (len as usize) <= MULTIPART_PART {
            let crc32 = crc32fast::hash(&first);
            self.runtime
                .block_on(self.store.put(&location, PutPayload::from(first)))
                .map_err(|e| self.failed("upload", key, e))?;
            return Ok(Transfer {
                len: n as u64,
                crc32,
            });
        }
        // Multipart: the file streams up a part at a time, never whole in memory.
        self.runtime
            .block_on(self.put_multipart(key, &location, path, &mut file, first))
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let location = self.location(key)?;
        self.runtime
            .block_on(self.store.put(&location, PutPayload::from(bytes.to_vec())))
            .map(drop)
            .map_err(|e| self.failed("upload", key, e))
    }

    fn get_to_file(&self, key: &str, path: &Path) -> Result<Transfer> {
        let location = self.location(key)?;
        let mut out = std::fs::File::create(path).map_err(Error::io_at("create", path))?;
        self.runtime.block_on(async {
            let mut stream = self
                .store
                .get(&location)
                .await
                .map_err(|e| self.failed("download", key, e))?
                .into_stream();
            let mut len = 0u64;
            let mut crc = crc32fast::Hasher::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.failed("download", key, e))?;
                out.write_all(&chunk).map_err(Error::io_at("write", path))?;
                crc.update(&chunk);
                len += chunk.len() as u64;
            }
            Ok(Transfer {
                len,
                crc32: crc.finalize(),
            })
        })
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let location = self.location(key)?;
        self.runtime.block_on(async {
            match self.store.get(&location).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.failed("download", key, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.failed("download", key, e)),
            }
        })
    }

    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        let location = self.location(key)?;
        if range.is_empty() {
            return Ok(bytes::Bytes::new());
        }
        self.runtime
            .block_on(self.store.get_range(&location, range))
            .map_err(|e| self.failed("download", key, e))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let location = self.location(key)?;
        match self.runtime.block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // `object_store` lists by whole path parts: list the parent and filter by the prefix.
        let parent = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        let location = (!parent.is_empty())
            .then(|| self.location(parent))
            .transpose()?;
        self.runtime.block_on(async {
            let mut stream = self.store.list(location.as_ref());
            let mut objects = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.failed("list", prefix, e))?;
                let key = meta.location.to_string();
                if key.starts_with(prefix) {
                    objects.push((key, meta.size));
                }
            }
            objects.sort();
            Ok(objects)
        })
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}
