//! The write-ahead log: every acknowledged span batch is on local disk before the ack.
//!
//! Segments are files named by the sequence number of their first record. A record is
//! `len: u32 | crc32: u32 | payload`, with payload `seq: u64 | tenant_len: u16 | tenant |
//! Arrow IPC stream`. One writer thread drains the request queue, writes every queued record,
//! fsyncs once (group commit), hands the records to the apply callback in sequence order and
//! then answers the callers. A torn record at the tail of the last segment (a crash mid-write)
//! was never acknowledged and is cut off on replay.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use tokio::sync::oneshot;

use crate::{Error, Result};

const HEADER_BYTES: usize = 8;
const SEGMENT_SUFFIX: &str = ".wal";
/// Largest record accepted, so a corrupt length can never make replay allocate wildly.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// A durable record handed to the apply callback.
#[derive(Debug)]
pub struct WalRecord {
    pub seq: u64,
    pub tenant: String,
    pub batch: RecordBatch,
    /// The memory `batch` holds: as appended, its arrays' sizes; as replayed, its encoded
    /// body, which every array of the batch is a slice of (summing the arrays' sizes would
    /// count that one buffer once per array).
    pub bytes: usize,
}

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_max_bytes: u64,
    /// Requests that may wait for the writer thread; further appends get backpressure.
    pub queue_max_requests: usize,
    /// Largest number of bytes written between two fsyncs.
    pub group_commit_max_bytes: usize,
}

type ApplyFn = dyn Fn(Vec<WalRecord>) + Send + Sync;

struct Request {
    tenant: String,
    payload: Vec<u8>,
    batch: RecordBatch,
    reply: oneshot::Sender<Result<u64>>,
}

struct Segments {
    /// First sequence numbers of the closed segments, oldest first.
    closed: Vec<u64>,
    active_first_seq: u64,
    active: File,
    active_bytes: u64,
    /// Sequence number the next record gets.
    next_seq: u64,
}

/// The write-ahead log.
pub struct Wal {
    config: WalConfig,
    segments: Arc<Mutex<Segments>>,
    sender: Mutex<Option<SyncSender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX)
            && let Ok(seq) = stem.parse::<u64>()
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Encodes a batch as an Arrow IPC stream.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2);
    let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(buf)
}

fn decode_payload(payload: &[u8]) -> Result<WalRecord> {
    let corrupt = || Error::Wal("record payload is shorter than its header".into());
    let seq = u64::from_le_bytes(payload.get(0..8).ok_or_else(corrupt)?.try_into().unwrap_or_default());
    let tenant_len = usize::from(u16::from_le_bytes(
        payload.get(8..10).ok_or_else(corrupt)?.try_into().unwrap_or_default(),
    ));
    let tenant = payload.get(10..10 + tenant_len).ok_or_else(corrupt)?;
    let tenant = String::from_utf8(tenant.to_vec()).map_err(|_| Error::Wal("tenant is not utf-8".into()))?;
    let encoded = &payload[10 + tenant_len..];
    let mut reader = StreamReader::try_new(encoded, None)?;
    let batch = reader
        .next()
        .ok_or_else(|| Error::Wal("record holds no batch".into()))??;
    Ok(WalRecord {
        seq,
        tenant,
        batch,
        bytes: encoded.len(),
    })
}

/// Reads the records of one segment; returns them and the byte length of the valid prefix.
fn read_segment(path: &Path) -> Result<(Vec<WalRecord>, u64, bool)> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    let mut valid_bytes = 0u64;
    let mut header = [0u8; HEADER_BYTES];
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok((records, valid_bytes, valid_bytes == fs::metadata(path)?.len()));
            }
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
        if len == 0 || len > MAX_RECORD_BYTES {
            return Ok((records, valid_bytes, false));
        }
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            return Ok((records, valid_bytes, false));
        }
        records.push(decode_payload(&payload)?);
        valid_bytes += (HEADER_BYTES + len) as u64;
    }
}

impl Wal {
    /// Opens the log in `config.dir`, returning it and every record it holds, oldest first.
    /// A torn tail is cut off. Appends go to a fresh segment.
    pub fn open(config: WalConfig) -> Result<(Self, Vec<WalRecord>)> {
        assert!(
            config.queue_max_requests > 0,
            "wal queue must hold at least one request"
        );
        fs::create_dir_all(&config.dir)?;
        let seqs = list_segments(&config.dir)?;
        let mut records = Vec::new();
        let mut next_seq = 0u64;
        for (i, first_seq) in seqs.iter().enumerate() {
            let path = segment_path(&config.dir, *first_seq);
            let (mut recs, valid_bytes, clean) = read_segment(&path)?;
            if !clean {
                let last = i + 1 == seqs.len();
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes,
                    last,
                    "wal segment has a torn or corrupt tail; cutting it off"
                );
                OpenOptions::new().write(true).open(&path)?.set_len(valid_bytes)?;
            }
            next_seq = next_seq.max(*first_seq);
            if let Some(last) = recs.last() {
                next_seq = next_seq.max(last.seq + 1);
            }
            records.append(&mut recs);
        }
        // The new active segment; its name keeps the sequence floor even when it stays empty.
        let active_first_seq = next_seq;
        let active_path = segment_path(&config.dir, active_first_seq);
        let active = OpenOptions::new().create(true).append(true).open(&active_path)?;
        let active_bytes = active.metadata()?.len();
        sync_dir(&config.dir)?;
        let closed = seqs.into_iter().filter(|s| *s != active_first_seq).collect();
        let segments = Segments {
            closed,
            active_first_seq,
            active,
            active_bytes,
            next_seq,
        };
        let wal = Self {
            config,
            segments: Arc::new(Mutex::new(segments)),
            sender: Mutex::new(None),
            writer: Mutex::new(None),
        };
        Ok((wal, records))
    }

    /// Starts the writer thread; durable records go to `apply` in sequence order.
    pub fn start(&self, apply: Arc<ApplyFn>) -> Result<()> {
        let (tx, rx) = sync_channel::<Request>(self.config.queue_max_requests);
        let segments = self.segments.clone();
        let config = self.config.clone();
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer_loop(rx, segments, config, apply))?;
        *self.sender.lock().expect("wal sender lock") = Some(tx);
        *self.writer.lock().expect("wal writer lock") = Some(handle);
        Ok(())
    }

    /// Appends `batch` for `tenant`; resolves with the record's sequence number once it is
    /// fsynced and applied.
    pub async fn append(&self, tenant: &str, batch: RecordBatch) -> Result<u64> {
        let tenant_len = u16::try_from(tenant.len()).map_err(|_| Error::InvalidTenant(tenant.into()))?;
        let ipc = encode_batch(&batch)?;
        let mut payload = Vec::with_capacity(10 + tenant.len() + ipc.len());
        payload.extend_from_slice(&[0u8; 8]); // seq, filled by the writer
        payload.extend_from_slice(&tenant_len.to_le_bytes());
        payload.extend_from_slice(tenant.as_bytes());
        payload.extend_from_slice(&ipc);
        if payload.len() > MAX_RECORD_BYTES {
            return Err(Error::TooLarge(format!(
                "batch of {} bytes exceeds the wal record limit of {MAX_RECORD_BYTES} bytes",
                payload.len()
            )));
        }
        let (reply, rx) = oneshot::channel();
        let request = Request {
            tenant: tenant.to_string(),
            payload,
            batch,
            reply,
        };
        {
            let sender = self.sender.lock().expect("wal sender lock");
            let sender = sender.as_ref().ok_or(Error::ShuttingDown)?;
            match sender.try_send(request) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    return Err(Error::Backpressure("write-ahead log queue is full".into()));
                }
                Err(TrySendError::Disconnected(_)) => return Err(Error::ShuttingDown),
            }
        }
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Stops accepting appends, lets the writer finish what is queued and joins it.
    pub fn close(&self) {
        self.sender.lock().expect("wal sender lock").take();
        if let Some(handle) = self.writer.lock().expect("wal writer lock").take() {
            let _ = handle.join();
        }
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.segments.lock().expect("wal segments lock").next_seq
    }

    /// Deletes every segment whose records all have a sequence number below `min_live_seq`
    /// (every record below it is committed to the tables). The active segment is rotated first
    /// when it is wholly committed and not empty.
    pub fn truncate_before(&self, min_live_seq: u64) -> Result<usize> {
        let mut seg = self.segments.lock().expect("wal segments lock");
        if seg.active_bytes > 0 && seg.next_seq <= min_live_seq {
            rotate(&mut seg, &self.config.dir)?;
        }
        let mut removed = 0;
        while !seg.closed.is_empty() {
            // All records of closed[0] are below the first seq of the segment after it.
            let next_first = seg.closed.get(1).copied().unwrap_or(seg.active_first_seq);
            if next_first > min_live_seq {
                break;
            }
            let first = seg.closed.remove(0);
            fs::remove_file(segment_path(&self.config.dir, first))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.config.dir)?;
        }
        Ok(removed)
    }

    /// Total bytes of the segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        list_segments(&self.config.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| fs::metadata(segment_path(&self.config.dir, s)).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn rotate(seg: &mut Segments, dir: &Path) -> Result<()> {
    seg.active.sync_data()?;
    let first = seg.next_seq;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, first))?;
    sync_dir(dir)?;
    let old_first = std::mem::replace(&mut seg.active_first_seq, first);
    seg.closed.push(old_first);
    seg.active = file;
    seg.active_bytes = 0;
    Ok(())
}

fn writer_loop(rx: Receiver<Request>, segments: Arc<Mutex<Segments>>, config: WalConfig, apply: Arc<ApplyFn>) {
    let mut group: Vec<Request> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut group_bytes = first.payload.len();
        group.push(first);
        while group_bytes < config.group_commit_max_bytes {
            match rx.try_recv() {
                Ok(req) => {
                    group_bytes += req.payload.len();
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        // Write, fsync and apply under the segments lock: whoever reads `next_seq` afterwards
        // finds every record below it already applied (WAL truncation relies on this).
        let mut seg = segments.lock().expect("wal segments lock");
        match write_group(&mut seg, &config, &mut group) {
            Ok(first_seq) => {
                let mut records = Vec::with_capacity(group.len());
                let mut replies = Vec::with_capacity(group.len());
                for (i, req) in group.drain(..).enumerate() {
                    let seq = first_seq + i as u64;
                    records.push(WalRecord {
                        seq,
                        tenant: req.tenant,
                        bytes: req.batch.get_array_memory_size(),
                        batch: req.batch,
                    });
                    replies.push((req.reply, seq));
                }
                apply(records);
                drop(seg);
                for (reply, seq) in replies {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                drop(seg);
                tracing::error!(error = %e, "wal write failed");
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(Error::Wal(format!("write failed: {e}"))));
                }
            }
        }
    }
}

/// Writes the group's records and fsyncs; returns the first sequence number used.
fn write_group(seg: &mut Segments, config: &WalConfig, group: &mut [Request]) -> Result<u64> {
    if seg.active_bytes >= config.segment_max_bytes {
        rotate(seg, &config.dir)?;
    }
    let first_seq = seg.next_seq;
    let mut buf = Vec::with_capacity(group.iter().map(|r| r.payload.len() + HEADER_BYTES).sum());
    for (i, req) in group.iter_mut().enumerate() {
        let seq = first_seq + i as u64;
        req.payload[0..8].copy_from_slice(&seq.to_le_bytes());
        let len = u32::try_from(req.payload.len()).map_err(|_| Error::Wal("record too large".into()))?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&req.payload).to_le_bytes());
        buf.extend_from_slice(&req.payload);
    }
    let start_len = seg.active_bytes;
    if let Err(e) = seg.active.write_all(&buf).and_then(|()| seg.active.sync_data()) {
        // Cut off whatever part was written so later records stay readable.
        let _ = seg.active.set_len(start_len);
        return Err(e.into());
    }
    seg.active_bytes += buf.len() as u64;
    seg.next_seq += group.len() as u64;
    Ok(first_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    fn config(dir: &Path) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_max_bytes: 1,
            queue_max_requests: 16,
            group_commit_max_bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn replays_in_order_cuts_torn_tail_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, old) = Wal::open(config(dir.path())).unwrap();
        assert!(old.is_empty());
        let applied = Arc::new(Mutex::new(Vec::new()));
        let sink = applied.clone();
        wal.start(Arc::new(move |recs: Vec<WalRecord>| {
            sink.lock().unwrap().extend(recs.into_iter().map(|r| r.seq))
        }))
        .unwrap();
        for v in 0..5 {
            assert_eq!(wal.append("t1", batch(v)).await.unwrap(), v as u64);
        }
        assert_eq!(*applied.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        wal.close();

        // A torn write at the tail of the newest segment.
        let newest = *list_segments(dir.path()).unwrap().last().unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), newest))
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);

        let (wal, recs) = Wal::open(config(dir.path())).unwrap();
        let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert_eq!(recs[3].tenant, "t1");
        assert_eq!(wal.next_seq(), 5);
        wal.truncate_before(3).unwrap();
        drop(wal);
        let (wal, recs) = Wal::open(config(dir.path())).unwrap();
        assert!(recs.iter().all(|r| r.seq >= 3), "records below 3 were truncated");
        assert!(recs.iter().any(|r| r.seq == 4));
        wal.truncate_before(5).unwrap();
        drop(wal);
        let (wal, recs) = Wal::open(config(dir.path())).unwrap();
        assert!(recs.is_empty());
        assert_eq!(wal.next_seq(), 5, "the sequence floor survives truncation");
    }
}
