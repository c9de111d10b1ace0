//! Firehose delivery: records buffered by size or time, optionally transformed, compressed and
//! written as objects with Firehose's names, exactly once.
//!
//! Built so far: codecs ([`codec`]), object naming ([`naming`]), configuration ([`config`]), a
//! destination trait with a local directory ([`destination`]), direct-put delivery streams with
//! exactly-once delivery ([`delivery`]), and the service keeping them in a store's data directory
//! with a background worker ([`service`]). Still to come: a Kinesis stream as the source, and
//! object-store destinations.

pub mod codec;
pub mod config;
pub mod delivery;
pub mod destination;
pub mod naming;
pub mod service;

pub use codec::{Compression, ObjectEncoder};
pub use config::{BufferingHints, DeliveryConfig};
pub use delivery::{
    DeliveryReport, DeliveryStats, DeliveryStream, DeliveryStreamSpec, PutFailure, Source,
    SourceStart, Transform, Transformed,
};
#[cfg(feature = "s3")]
pub use destination::S3;
pub use destination::{Destination, LocalDirectory, S3Config};
pub use service::{
    check_bucket_name, read_delivery_stream, Buckets, DeliveryStreamConfig,
    DeliveryStreamDescription, DeliveryStreamFiles, DestinationConfig, Firehose, FirehoseOptions,
    FIREHOSE_DIR, OBJECTS_DIR,
};
