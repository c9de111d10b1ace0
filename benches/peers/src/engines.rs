//! The engines under test, each behind [`Log`]. Each is used the way its documentation suggests
//! for an append-only log: shardlog's `Shard` (FlushPolicy `Never`, or `Always` when every call
//! must be durable), a naive log (buffered writes of CRC frames), `commitlog` (key as metadata,
//! data as payload), redb and SQLite (one transaction per call, keyed by the record's index) and
//! fjall (one write batch per call, big-endian index keys).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::{Check, Log};

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Shardlog,
    /// shardlog with 64 KiB batches (`ShardOptions::batch_bytes`), for comparing batch sizes;
    /// run only when named in `--engines`.
    Shardlog64k,
    Naive,
    Commitlog,
    Redb,
    Sqlite,
    Fjall,
    #[cfg(feature = "rocksdb")]
    Rocksdb,
}

impl Engine {
    pub const ALL: &'static [Engine] = &[
        Engine::Shardlog,
        Engine::Naive,
        Engine::Commitlog,
        Engine::Redb,
        Engine::Sqlite,
        Engine::Fjall,
        #[cfg(feature = "rocksdb")]
        Engine::Rocksdb,
    ];

    /// Engines run only when named.
    pub const OPTIONAL: &'static [Engine] = &[Engine::Shardlog64k];

    pub fn parse(name: &str) -> Option<Engine> {
        Engine::ALL
            .iter()
            .chain(Engine::OPTIONAL)
            .copied()
            .find(|e| format!("{e:?}").eq_ignore_ascii_case(name))
    }
}

/// Opens (creating or recovering) `engine`'s log in `dir`; `durable_calls` says every append
/// call will ask to be durable (engines with a per-open durability setting use it).
pub fn open_engine(
    engine: Engine,
    dir: &Path,
    durable_calls: bool,
) -> Result<Box<dyn Log>, String> {
    Ok(match engine {
        Engine::Shardlog => Box::new(ShardlogLog::open(dir, durable_calls, None)?),
        Engine::Shardlog64k => Box::new(ShardlogLog::open(dir, durable_calls, Some(64 * 1024))?),
        Engine::Naive => Box::new(NaiveLog::open(dir)?),
        Engine::Commitlog => Box::new(CommitLogLog::open(dir)?),
        Engine::Redb => Box::new(RedbLog::open(dir)?),
        Engine::Sqlite => Box::new(SqliteLog::open(dir, durable_calls)?),
        Engine::Fjall => Box::new(FjallLog::open(dir)?),
        #[cfg(feature = "rocksdb")]
        Engine::Rocksdb => Box::new(rocks::RocksLog::open(dir)?),
    })
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------

struct ShardlogLog {
    shard: shardlog::Shard,
    durable_calls: bool,
}

impl ShardlogLog {
    fn open(
        dir: &Path,
        durable_calls: bool,
        batch_bytes: Option<usize>,
    ) -> Result<ShardlogLog, String> {
        let defaults = shardlog::ShardOptions::default();
        let options = shardlog::ShardOptions {
            batch_bytes: batch_bytes.unwrap_or(defaults.batch_bytes),
            flush: if durable_calls {
                shardlog::FlushPolicy::Always
            } else {
                shardlog::FlushPolicy::Never
            },
            ..defaults
        };
        Ok(ShardlogLog {
            shard: shardlog::Shard::open(dir, options).map_err(err)?,
            durable_calls,
        })
    }
}

impl Log for ShardlogLog {
    fn append(&mut self, records: &[(&[u8], &[u8])], sync: bool) -> Result<(), String> {
        if let [(key, data)] = records {
            self.shard
                .append(&[shardlog::NewRecord::new(key, data)])
                .map_err(err)?;
        } else {
            let batch: Vec<shardlog::NewRecord<'_>> = records
                .iter()
                .map(|(k, d)| shardlog::NewRecord::new(k, d))
                .collect();
            self.shard.append(&batch).map_err(err)?;
        }
        if sync && !self.durable_calls {
            self.shard.flush().map_err(err)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.shard.flush().map_err(err)
    }

    fn read_all(&mut self, check: Check<'_>) -> Result<u64, String> {
        let end = self.shard.next_offset();
        let limits = shardlog::ReadLimits {
            max_records: 100_000,
            max_bytes: 64 * 1024 * 1024,
        };
        let mut from = shardlog::Offset::new(0);
        let mut n = 0;
        while from < end {
            from = self
                .shard
                .visit(from, limits, |r| {
                    check(r.offset.get(), r.partition_key, r.data);
                    n += 1;
                })
                .map_err(err)?;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------

/// The simplest log that is still a log: frames `{len u32 | crc32 u32 | key_len u16 | key |
/// data}` through a 1 MiB buffered writer; reopening scans every frame to find where the valid
/// ones end (where the next append goes).
struct NaiveLog {
    path: PathBuf,
    writer: BufWriter<File>,
    buf: Vec<u8>,
}

impl NaiveLog {
    fn open(dir: &Path) -> Result<NaiveLog, String> {
        let path = dir.join("naive.log");
        let valid_end = if path.exists() {
            let mut end = 0u64;
            Self::scan(&path, &mut |_, _, _| {}, &mut end)?;
            end
        } else {
            0
        };
        let file = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        file.set_len(valid_end).map_err(err)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        std::io::Seek::seek(&mut writer, std::io::SeekFrom::Start(valid_end)).map_err(err)?;
        Ok(NaiveLog {
            path,
            writer,
            buf: Vec::new(),
        })
    }

    /// Reads frames until the first bad or cut one; `end` gets where the good ones end.
    fn scan(path: &Path, check: Check<'_>, end: &mut u64) -> Result<u64, String> {
        let mut r = BufReader::with_capacity(1 << 20, File::open(path).map_err(err)?);
        let mut head = [0u8; 8];
        let mut body = Vec::new();
        let mut n = 0;
        loop {
            if r.read_exact(&mut head).is_err() {
                return Ok(n);
            }
            let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
            body.resize(len, 0);
            if len < 2 || r.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
                return Ok(n);
            }
            let key_len = u16::from_le_bytes([body[0], body[1]]) as usize;
            check(n, &body[2..2 + key_len], &body[2 + key_len..]);
            n += 1;
            *end += 8 + len as u64;
        }
    }
}

impl Log for NaiveLog {
    fn append(&mut self, records: &[(&[u8], &[u8])], sync: bool) -> Result<(), String> {
        for (key, data) in records {
            self.buf.clear();
            self.buf
                .extend_from_slice(&(key.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(key);
            self.buf.extend_from_slice(data);
            let head_len = (self.buf.len() as u32).to_le_bytes();
            let crc = crc32fast::hash(&self.buf).to_le_bytes();
            self.writer.write_all(&head_len).map_err(err)?;
            self.writer.write_all(&crc).map_err(err)?;
            self.writer.write_all(&self.buf).map_err(err)?;
        }
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.writer.flush().map_err(err)?;
        self.writer.get_ref().sync_data().map_err(err)
    }

    fn read_all(&mut self, check: Check<'_>) -> Result<u64, String> {
        self.writer.flush().map_err(err)?;
        Self::scan(&self.path, check, &mut 0)
    }
}

// ---------------------------------------------------------------------------------------------

/// `commitlog`: the key as the message's metadata, the data as its payload. Its `flush` only
/// empties its buffers, so a sync also fdatasyncs the newest segment and index files.
struct CommitLogLog {
    dir: PathBuf,
    log: commitlog::CommitLog,
    buf: commitlog::message::MessageBuf,
}

impl CommitLogLog {
    fn open(dir: &Path) -> Result<CommitLogLog, String> {
        let mut options = commitlog::LogOptions::new(dir);
        // The limit applies to a whole append (500 records of 64 KiB are 32 MiB).
        options.message_max_bytes(64 << 20);
        Ok(CommitLogLog {
            dir: dir.to_path_buf(),
            log: commitlog::CommitLog::new(options).map_err(err)?,
            buf: commitlog::message::MessageBuf::default(),
        })
    }
}

impl Log for CommitLogLog {
    fn append(&mut self, records: &[(&[u8], &[u8])], sync: bool) -> Result<(), String> {
        self.buf.clear();
        for (key, data) in records {
            self.buf
                .push_with_metadata(key, data)
                .map_err(|e| format!("{e:?}"))?;
        }
        self.log
            .append(&mut self.buf)
            .map_err(|e| format!("{e:?}"))?;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.log.flush().map_err(err)?;
        let mut newest: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(err)?
            .flatten()
            .map(|e| e.path())
            .collect();
        newest.sort();
        for ext in ["log", "index"] {
            if let Some(p) = newest
                .iter()
                .rev()
                .find(|p| p.extension().is_some_and(|e| e == ext))
            {
                File::open(p).and_then(|f| f.sync_data()).map_err(err)?;
            }
        }
        Ok(())
    }

    fn read_all(&mut self, check: Check<'_>) -> Result<u64, String> {
        use commitlog::message::MessageSet;
        let end = self.log.next_offset();
        let mut from = 0;
        let mut n = 0;
        while from < end {
            let set = self
                .log
                .read(from, commitlog::ReadLimit::max_bytes(16 << 20))
                .map_err(|e| format!("{e:?}"))?;
            let mut any = false;
            for m in set.iter() {
                if !m.verify_hash() {
                    return Err(format!("commitlog: message {} fails its hash", m.offset()));
                }
                check(m.offset(), m.metadata(), m.payload());
                from = m.offset() + 1;
                n += 1;
                any = true;
            }
            if !any {
                break;
            }
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------

const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");

/// redb: one write transaction per call, the record's index as key, key + data as value;
/// `Durability::None` when the call need not be durable, `Immediate` when it must (and for the
/// final sync).
struct RedbLog {
    db: redb::Database,
    next: u64,
    value: Vec<u8>,
}

impl RedbLog {
    fn open(dir: &Path) -> Result<RedbLog, String> {
        let db = redb::Database::create(dir.join("log.redb")).map_err(err)?;
        let next = {
            use redb::ReadableTable;
            let tx = db.begin_read().map_err(err)?;
            match tx.open_table(REDB_TABLE) {
                Ok(t) => t.last().map_err(err)?.map_or(0, |(k, _)| k.value() + 1),
                Err(_) => 0,
            }
        };
        Ok(RedbLog {
            db,
            next,
            value: Vec::new(),
        })
    }

    fn commit(&mut self, records: &[(&[u8], &[u8])], durable: bool) -> Result<(), String> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        });
        {
            let mut table = tx.open_table(REDB_TABLE).map_err(err)?;
            for (key, data) in records {
                self.value.clear();
                self.value.extend_from_slice(key);
                self.value.extend_from_slice(data);
                table
                    .insert(self.next, self.value.as_slice())
                    .map_err(err)?;
                self.next += 1;
            }
        }
        tx.commit().map_err(err)
    }
}

impl Log for RedbLog {
    fn append(&mut self, records: &[(&[u8], &[u8])], sync: bool) -> Result<(), String> {
        self.commit(records, sync)
    }

    fn sync(&mut self) -> Result<(), String> {
        self.commit(&[], true)
    }

    fn read_all(&mut self, check: Check<'_>) -> Result<u64, String> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(REDB_TABLE).map_err(err)?;
        let mut n = 0;
        for entry in table.range(0..).map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            let v = v.value();
            check(k.value(), &v[..16], &v[16..]);
            n += 1;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------

/// SQLite in WAL mode: one transaction per call into `log(id INTEGER PRIMARY KEY, k, v)`;
/// `synchronous=FULL` when every call must be durable, `OFF` otherwise (the final sync
/// checkpoints with `FULL`).
struct SqliteLog {
    conn: rusqlite::Connection,
    next: u64,
}

impl SqliteLog {
    fn open(dir: &Path, durable_calls: bool) -> Result<SqliteLog, String> {
        let conn = rusqlite::Connection::open(dir.join("log.sqlite")).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(
            None,
            "synchronous",
            if durable_calls { "FULL" } else { "OFF" },
        )
        .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, k BLOB NOT NULL, v BLOB NOT NULL)",
        )
        .map_err(err)?;
        let next: i64 = conn
            .query_row("SELECT coalesce(max(id) + 1, 0) FROM log", [], |r| r.get(0))
            .map_err(err)?;
        Ok(SqliteLog {
            conn,
            next: next as u64,
        })
    }
}

impl Log for SqliteLog {
    fn append(&mut self, records: &[(&[u8], &[u8])], _sync: bool) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO log (id, k, v) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for (key, data) in records {
                insert
                    .execute(rusqlite::params![self.next as i64, key, data])
                    .map_err(err)?;
                self.next += 1;
            }
        }
        tx.commit().map_err(err)
    }

    fn sync(&mut self) -> Result<(), String> {
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(err)
    }

    fn read_all(&mut self, check: Check<'_>) -> Result<u64, String> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, k, v FROM log ORDER BY id")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(err)? {
            let id: i64 = row.get(0).map_err(err)?;
            let k = row.get_ref(1).map_err(err)?.as_blob().map_err(err)?;
            let v = row.get_ref(2).map_err(err)?.as_blob().map_err(err)?;
            check(id as u64, k, v);
            n += 1;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------

/// fjall: one write batch per call (persisted with `SyncData` when it must be durable),
/// big-endian record indexes as keys, key + data as values.
struct FjallLog {
    keyspace: fjall::Keyspace,
    partition: fjall::PartitionHandle,
    next: u64,
    value: Vec<u8>,
}

impl FjallLog {
    fn open(dir: &Path) -> Result<FjallLog, String> {
        let keyspace = fjall::Config::new(dir).open().map_err(err)?;
        let partition = keyspace
            .open_partition("log", fjall::PartitionCreateOptions::default())
            .map_err(err)?;
        let next = match partition.last_key_value().map_err(err)? {
            Some((k, _)) => u64::from_be_bytes(k[..8].try_into().map_err(err)?) + 1,
            None => 0,
        };
        Ok(FjallLog {
            keyspace,
            partition,
            next,
            value: Vec::new(),
        })
    }
}

impl Log for FjallLog {
    fn append(&mut self, records: &[(&[u8], &[u8])], sync: bool) -> Result<(), String> {
        let mut batch = self
            .keyspace
            .batch()
            .durability(sync.then_some(fjall::PersistMode::SyncData));
        for (key, data) in records {
            self.value.clear();
            self.value.extend_from_slice(key);
            self.value.extend_from_slice(data);
            batch.insert(
                &self.partition,
                self.next.to_be_bytes(),
                self.value.as_slice(),
            );
            self.next += 1;
        }
        batch.commit().map_err(err)
    }

    fn sync(&mut self) -> Result<(), String> {
        self.keyspace
            .persist(fjall::PersistMode::SyncAll)
            .map_err(err)
    }

    fn read_all(&mut self, check: Check<'_>) -> Result<u64, String> {
        let mut n = 0;
        for entry in self.partition.iter() {
            let (k, v) = entry.map_err(err)?;
            let i = u64::from_be_bytes(k[..8].try_into().map_err(err)?);
            check(i, &v[..16], &v[16..]);
            n += 1;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;

    /// RocksDB: one write batch per call (synced when it must be durable), big-endian record
    /// indexes as keys, key + data as values.
    pub struct RocksLog {
        db: rocksdb::DB,
        next: u64,
        value: Vec<u8>,
    }

    impl RocksLog {
        pub fn open(dir: &Path) -> Result<RocksLog, String> {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            let db = rocksdb::DB::open(&options, dir).map_err(err)?;
            let next = {
                let mut it = db.raw_iterator();
                it.seek_to_last();
                it.key()
                    .map_or(0, |k| u64::from_be_bytes(k[..8].try_into().unwrap()) + 1)
            };
            Ok(RocksLog {
                db,
                next,
                value: Vec::new(),
            })
        }
    }

    impl Log for RocksLog {
        fn append(&mut self, records: &[(&[u8], &[u8])], sync: bool) -> Result<(), String> {
            let mut batch = rocksdb::WriteBatch::default();
            for (key, data) in records {
                self.value.clear();
                self.value.extend_from_slice(key);
                self.value.extend_from_slice(data);
                batch.put(self.next.to_be_bytes(), &self.value);
                self.next += 1;
            }
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(sync);
            self.db.write_opt(batch, &options).map_err(err)
        }

        fn sync(&mut self) -> Result<(), String> {
            self.db.flush_wal(true).map_err(err)
        }

        fn read_all(&mut self, check: Check<'_>) -> Result<u64, String> {
            let mut n = 0;
            let mut it = self.db.raw_iterator();
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let i = u64::from_be_bytes(k[..8].try_into().map_err(err)?);
                check(i, &v[..16], &v[16..]);
                n += 1;
                it.next();
            }
            it.status().map_err(err)?;
            Ok(n)
        }
    }
}
