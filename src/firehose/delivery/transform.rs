//! The transformation hook: what a registered transform is given and returns.

/// What a transform did with one record (Firehose's Lambda contract: `Ok`, `Dropped`,
/// `ProcessingFailed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// Deliver these bytes instead.
    Ok(Vec<u8>),
    /// Deliver nothing for this record (on purpose).
    Dropped,
    /// The record could not be processed: it goes to the error output, with this reason.
    ProcessingFailed(String),
}

/// A record transformation hook. It gets a batch of (record id, data) and returns one result per
/// record, in order. It should be deterministic: a batch delivered again after a crash is
/// transformed again.
pub trait Transform: Send + Sync {
    /// Transforms a batch.
    fn transform(&self, records: &[(String, &[u8])]) -> Vec<Transformed>;
}

impl<F> Transform for F
where
    F: Fn(&[(String, &[u8])]) -> Vec<Transformed> + Send + Sync,
{
    fn transform(&self, records: &[(String, &[u8])]) -> Vec<Transformed> {
        self(records)
    }
}
