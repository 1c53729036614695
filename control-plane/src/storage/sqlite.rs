//! The embedded durable store: SQLite in WAL mode with group commit.
//!
//! Only [`super::Store`] callers use this: the control plane opens one [`SqliteStore`] per data
//! directory (a lock file next to the database keeps a second process out) and hands it out as
//! `Arc<dyn Store>`.
//!
//! Layout (one database file, `synchronous=FULL`: an acknowledged write survives `kill -9` and
//! power loss; `NORMAL` would only survive the former):
//! - `log`: one row per revision, holding the value (`kind` 0 put, 1 delete; a delete's `value`
//!   is NULL: its last value is the row at `prev_rev`, the version it removed);
//! - `kv`: every live key with the revision of its `log` row, clustered by key, for latest reads.
//!   Values are stored once, and a write changes one `kv` page plus `log` pages that the whole
//!   batch appends to. `log` has no key index (it would double the pages a batch writes): the
//!   state of a key at an older revision `R` is the `prev_rev` of its first change after `R`,
//!   found by scanning the (recent) history after `R`;
//! - `meta`: the compacted revision and how far compaction got. The current revision is not
//!   written per commit (that would add a page to every commit's WAL frames): it is the
//!   newest `log` row's, or the compacted revision if higher, since compaction records its floor
//!   before it removes any row, so a revision whose row is gone is at most that floor. Revisions
//!   never go backwards. The `rev` row older builds kept is not read: it never exceeded that.
//!
//! Threads: one write connection, behind a mutex. A writer thread commits everything queued (up
//! to [`MAX_BATCH`] requests) in one transaction, so one fsync covers many writers; it never
//! waits for more work, but when the previous commit held more than one write it yields the CPU
//! once before closing a batch: on a busy machine the request handlers then queue their writes
//! into this commit (at 100 concurrent creates on 2 cores, 25 writes per fsync instead of 9 and
//! ~9 % more creates/s), and on an idle one the yield returns at once. A write that is the only
//! one in progress while the writer thread waits commits on its caller's thread instead (~0.2 ms
//! with the fsync): the hand-over and the answer back cost two thread wake-ups, which on a VM
//! made a lone create ~15 % slower. A second concurrent write finds the connection busy and
//! queues, so at most one caller blocks a runtime worker for a commit at a time. Reads use a small
//! pool of read-only connections that WAL lets run beside the writer. Watches are fed by a bounded
//! broadcast of committed events; a watcher that falls behind catches up from `log` instead of
//! holding writers back.
//!
//! Why SQLite: measured on the target machine (DESIGN.md, storage reference figures), WAL +
//! group commit does 7.9k / 37k / 150k writes/s at 1 / 10 / 100 in flight, more than etcd on the
//! same disk, with no extra process.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self as std_mpsc, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tracing::{Instrument, debug, info, warn};

use super::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, StoreResult, WatchReceiver,
    prefix_end,
};

/// Most write requests committed in one transaction.
const MAX_BATCH: usize = 256;
/// Read connections (and concurrent blocking reads); the machine has 2 cores.
const READ_CONNECTIONS: usize = 4;
/// Committed events kept for live watchers; a watcher further behind replays from `log`.
const LIVE_EVENTS: usize = 4096;
/// Events buffered per watcher before its feeding task waits for the consumer.
const WATCH_BUFFER: usize = 256;
/// `log` rows read per replay query.
const REPLAY_CHUNK: usize = 512;
/// `log` rows scanned per compaction transaction, so writes interleave with a long compaction.
const COMPACT_CHUNK: i64 = 2048;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the post-compaction `wal_checkpoint(TRUNCATE)` may wait for readers; writes wait too.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_millis(200);
/// The WAL file is cut back to this size after a checkpoint resets it (it cycles at ~4 MiB:
/// SQLite checkpoints every 1000 pages).
const WAL_SIZE_LIMIT: i64 = 8 << 20;
const SCHEMA_VERSION: i64 = 1;

const PUT: i64 = 0;
const DELETE: i64 = 1;

const SCHEMA: &str = "
BEGIN;
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value BLOB,
    create_rev INTEGER NOT NULL,
    prev_rev INTEGER NOT NULL,
    kind INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted', 0), ('compact_done', 0);
PRAGMA user_version = 1;
COMMIT;
";

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(format!("sqlite: {error}"))
    }
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {error}", path.display()))
}

fn writer_gone() -> StoreError {
    StoreError::Backend("the store's writer thread has stopped".to_string())
}

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    shared: Arc<Shared>,
    commands: Option<std_mpsc::Sender<Command>>,
    events: broadcast::Sender<Arc<Event>>,
    writer: Option<JoinHandle<()>>,
    /// The write connection and its state, used by the writer thread and by inline commits.
    core: Arc<Mutex<Writer>>,
    /// Set while the writer thread waits with nothing queued and no compaction to do.
    idle: Arc<AtomicBool>,
    /// Writes in progress (queued, committing or being answered).
    in_flight: AtomicUsize,
    /// Writes committed by their caller rather than the writer thread.
    inline_commits: AtomicU64,
    /// Held (flock) for the store's lifetime. A separate file: closing any descriptor of the
    /// database itself would drop SQLite's POSIX locks.
    _lock: File,
}

/// What the store handle, the writer thread and watch tasks share.
struct Shared {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    read_slots: Semaphore,
    current: AtomicI64,
    compacted: AtomicI64,
    /// The latest value of every live key, kept by the writer: reads of the latest value are
    /// answered from memory. A read connection's page cache is discarded whenever another
    /// connection has written, so under a write load every SQLite point read went to the file
    /// (the read in each update was 14 % of the server's CPU).
    latest: RwLock<HashMap<String, Arc<KeyValue>>>,
}

enum WriteOp {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: Revision },
    Delete { key: String, expected: Revision },
}

impl WriteOp {
    fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
        }
    }
}

struct PendingWrite {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<KeyValue>>,
}

enum Command {
    Write(PendingWrite),
    Compact { revision: Revision, reply: oneshot::Sender<StoreResult<()>> },
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, e.g. `DATA_DIR/state.db`.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        }
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        lock.try_lock().map_err(|error| match error {
            std::fs::TryLockError::WouldBlock => StoreError::Backend(format!(
                "{} is in use by another store (lock {})",
                path.display(),
                lock_path.display()
            )),
            std::fs::TryLockError::Error(error) => io_error("lock", &lock_path, error),
        })?;

        preallocate_wal(path)?;
        super::sqlite_memory::install();
        let conn = open_writer(path)?;
        let meta = |name: &str| conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| row.get(0));
        let (compacted, compact_done): (Revision, Revision) = (meta("compacted")?, meta("compact_done")?);
        let rev = current_revision(&conn, compacted)?;
        let mut live = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT k.key, l.value, k.create_rev, k.mod_rev FROM kv AS k CROSS JOIN log AS l ON l.rev = k.mod_rev",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let kv = kv_from_row(row)?;
                live.insert(kv.key.clone(), Arc::new(kv));
            }
        }

        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
            read_slots: Semaphore::new(READ_CONNECTIONS),
            current: AtomicI64::new(rev),
            compacted: AtomicI64::new(compacted),
            latest: RwLock::new(live),
        });
        let (events, _) = broadcast::channel(LIVE_EVENTS);
        let (commands, queue) = std_mpsc::channel();
        let writer = Writer {
            conn,
            rev,
            compacted,
            compact_done,
            // Finish a compaction that a crash interrupted.
            job: (compact_done < compacted).then(|| CompactJob { target: compacted, waiters: Vec::new() }),
            shared: Arc::clone(&shared),
            events: events.clone(),
        };
        let core = Arc::new(Mutex::new(writer));
        let idle = Arc::new(AtomicBool::new(false));
        let writer = {
            let (core, idle) = (Arc::clone(&core), Arc::clone(&idle));
            std::thread::Builder::new()
                .name("store-writer".to_string())
                .spawn(move || Writer::run(&core, &idle, queue))
                .map_err(|e| StoreError::Backend(format!("spawn the store writer: {e}")))?
        };
        info!(path = %path.display(), revision = rev, compacted, "opened SQLite store");
        Ok(SqliteStore {
            shared,
            commands: Some(commands),
            events,
            writer: Some(writer),
            core,
            idle,
            in_flight: AtomicUsize::new(0),
            inline_commits: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn send(&self, command: Command) -> StoreResult<()> {
        self.commands.as_ref().ok_or_else(writer_gone)?.send(command).map_err(|_| writer_gone())
    }

    fn write(&self, op: WriteOp) -> BoxFuture<'_, StoreResult<KeyValue>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let write = PendingWrite { op, reply };
            // A write that finds the writer thread idle commits here: handing it over and back
            // costs two thread wake-ups (tens of microseconds each on a VM), more than a lone
            // request's own SQLite work. Under load the writer thread is busy and batches.
            let _writing = InFlight::enter(&self.in_flight);
            let queued = {
                let alone = self.in_flight.load(Ordering::Acquire) == 1 && self.idle.load(Ordering::Acquire);
                let inline = if alone { self.core.try_lock().ok() } else { None };
                match inline {
                    Some(mut writer) => {
                        writer.commit(vec![write]);
                        self.inline_commits.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    None => self.send(Command::Write(write)),
                }
            };
            queued?;
            answer.await.map_err(|_| writer_gone())?
        })
    }
}

/// Counts a write in progress for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer once its current transaction (or compaction chunk)
        // is done; joining it means the file is closed, and the lock released, on return.
        drop(self.commands.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            warn!("the store writer thread panicked");
        }
    }
}

impl Store for SqliteStore {
    fn get(&self, key: &str, revision: Revision) -> BoxFuture<'_, StoreResult<Option<KeyValue>>> {
        if revision == 0 {
            let latest = self.shared.latest.read().unwrap_or_else(PoisonError::into_inner);
            let found = latest.get(key).map(|kv| (**kv).clone());
            return Box::pin(std::future::ready(Ok(found)));
        }
        let key = key.to_string();
        Box::pin(read(&self.shared, move |conn| {
            let tx = conn.transaction()?;
            let snapshot = Snapshot::read(&tx)?;
            let at = snapshot.resolve(revision)?;
            version_at(&tx, &key, at, snapshot.current)
        }))
    }

    fn range(&self, req: RangeRequest) -> BoxFuture<'_, StoreResult<RangeResponse>> {
        Box::pin(read(&self.shared, move |conn| range_in(conn, &req)))
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, StoreResult<KeyValue>> {
        self.write(WriteOp::Create { key: key.to_string(), value })
    }

    fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> BoxFuture<'_, StoreResult<KeyValue>> {
        self.write(WriteOp::Update { key: key.to_string(), value, expected })
    }

    fn delete(&self, key: &str, expected: Revision) -> BoxFuture<'_, StoreResult<KeyValue>> {
        self.write(WriteOp::Delete { key: key.to_string(), expected })
    }

    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, StoreResult<WatchReceiver>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            // Subscribe before reading any revision: every event committed later than what we
            // read is then certain to arrive on `live`.
            let live = self.events.subscribe();
            let current = self.shared.current.load(Ordering::SeqCst);
            let compacted = self.shared.compacted.load(Ordering::SeqCst);
            let after = match after {
                0 => current,
                after if after < 0 => return Err(StoreError::Backend(format!("negative watch revision {after}"))),
                after if after < compacted => return Err(StoreError::Compacted { requested: after, compacted }),
                after => after,
            };
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let span = tracing::debug_span!("watch", %prefix, after);
            let task =
                WatchTask { shared: Arc::clone(&self.shared), end: prefix_end(&prefix), prefix, tx, last: after };
            tokio::spawn(task.run(live, after < current).instrument(span));
            Ok(rx)
        })
    }

    fn current_revision(&self) -> BoxFuture<'_, StoreResult<Revision>> {
        Box::pin(async move { Ok(self.shared.current.load(Ordering::SeqCst)) })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.send(Command::Compact { revision, reply })?;
            answer.await.map_err(|_| writer_gone())?
        })
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    fn size_on_disk(&self) -> u64 {
        let len = |path: &Path| fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        len(&self.shared.path) + len(&sibling(&self.shared.path, "-wal"))
    }
}

/// Compacts `store` every `every` to `current − keep` (when that is past the compacted
/// revision), so reads and watches can go back at least `keep` revisions and the history on disk
/// is bounded by `keep` plus one interval's writes.
///
/// kube-apiserver instead compacts every 5 minutes to the revision it saw at the previous tick
/// (history bounded by time, not by count); a count bounds disk use however fast writes come.
/// The task holds the store weakly and ends when the store is dropped.
pub fn spawn_compactor<S: Store + ?Sized>(
    store: &Arc<S>,
    every: Duration,
    keep: Revision,
) -> tokio::task::JoinHandle<()> {
    let store = Arc::downgrade(store);
    tokio::spawn(
        async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // The first tick is immediate.
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else { return };
                match compact_keeping(&*store, keep).await {
                    Ok(Some(revision)) => debug!(revision, "compacted"),
                    Ok(None) => {}
                    Err(error) => warn!(%error, "compaction failed"),
                }
            }
        }
        .instrument(tracing::info_span!("compactor")),
    )
}

/// One compaction to `current − keep`; returns the new compacted revision, if it moved.
pub async fn compact_keeping<S: Store + ?Sized>(store: &S, keep: Revision) -> StoreResult<Option<Revision>> {
    let target = store.current_revision().await? - keep.max(0);
    if target <= store.compacted_revision() {
        return Ok(None);
    }
    store.compact(target).await?;
    Ok(Some(target))
}

/// `path` with `suffix` appended to its file name (`state.db` → `state.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Gives a new WAL file its full size, written, before SQLite opens it. Commits then overwrite
/// blocks the file already has, and each commit's fdatasync flushes data only; appending also
/// made it commit the file's new size to the journal, which doubled its latency on this disk
/// (`dd oflag=dsync`: 239 µs per 4 KiB append, 110 µs per overwrite). SQLite reads a WAL whose
/// header is not valid (zeros) as empty. A WAL with content (after a crash) is never touched.
fn preallocate_wal(path: &Path) -> StoreResult<()> {
    let wal = sibling(path, "-wal");
    match fs::metadata(&wal) {
        Ok(meta) if meta.len() > 0 => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("inspect", &wal, e)),
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&wal)
        .map_err(|e| io_error("create", &wal, e))?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(WAL_SIZE_LIMIT as usize).div_ceil(zeros.len()) {
        file.write_all(&zeros).map_err(|e| io_error("write", &wal, e))?;
    }
    file.sync_all().map_err(|e| io_error("sync", &wal, e))?;
    if let Some(dir) = wal.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync", dir, e))?;
    }
    Ok(())
}

fn open_writer(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "{} has schema version {version}, newer than this program",
            path.display()
        )));
    }
    if version == 0 {
        // Only an empty database can choose auto_vacuum; it lets compaction give pages back.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("{} refused WAL mode (got {mode})", path.display())));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;"
    ))?;
    conn.execute_batch(SCHEMA)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Runs `f` on a pooled read connection.
///
/// Reads run under `spawn_blocking` rather than inline under a mutex: a range over thousands of
/// keys takes milliseconds and would stall a runtime worker (there are two on this machine); the
/// hand-off costs microseconds. The semaphore bounds the pool at [`READ_CONNECTIONS`].
async fn read<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    let _slot = shared.read_slots.acquire().await.map_err(|_| writer_gone())?;
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let pooled = shared.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&shared.path)?,
        };
        let result = f(&mut conn);
        shared.readers.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        result
    })
    .await
    .map_err(|e| StoreError::Backend(format!("read task: {e}")))?
}

/// The current revision: the newest `log` row's (the rowid B-tree's last, one descent), or the
/// compaction floor when compaction removed the newest rows (see the module docs).
fn current_revision(conn: &Connection, compacted: Revision) -> rusqlite::Result<Revision> {
    let newest: Revision =
        conn.prepare_cached("SELECT COALESCE(MAX(rev), 0) FROM log")?.query_row([], |row| row.get(0))?;
    Ok(newest.max(compacted))
}

/// The revisions a read transaction sees.
struct Snapshot {
    current: Revision,
    compacted: Revision,
}

impl Snapshot {
    fn read(tx: &Transaction<'_>) -> rusqlite::Result<Snapshot> {
        let compacted =
            tx.prepare_cached("SELECT value FROM meta WHERE name = 'compacted'")?.query_row([], |row| row.get(0))?;
        Ok(Snapshot { current: current_revision(tx, compacted)?, compacted })
    }

    /// The revision to read at for a requested one (0: latest).
    fn resolve(&self, requested: Revision) -> StoreResult<Revision> {
        match requested {
            0 => Ok(self.current),
            r if r < 0 => Err(StoreError::Backend(format!("negative revision {r}"))),
            r if r < self.compacted => Err(StoreError::Compacted { requested: r, compacted: self.compacted }),
            r if r > self.current => Err(StoreError::FutureRevision { requested: r, current: self.current }),
            r => Ok(r),
        }
    }
}

fn latest(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached(
        "SELECT l.value, k.create_rev, k.mod_rev FROM kv AS k CROSS JOIN log AS l ON l.rev = k.mod_rev \
         WHERE k.key = ?1",
    )?
    .query_row([key], |row| {
        Ok(KeyValue {
            key: key.to_string(),
            value: row.get(0)?,
            create_revision: row.get(1)?,
            mod_revision: row.get(2)?,
        })
    })
    .optional()
}

/// The version of `key` that a change (the one at `rev`) replaced; `None` when it created the key.
fn replaced(conn: &Connection, key: &str, rev: Revision, prev_rev: Revision) -> StoreResult<Option<KeyValue>> {
    if prev_rev == 0 {
        return Ok(None);
    }
    let row = conn
        .prepare_cached("SELECT value, create_rev FROM log WHERE rev = ?1 AND kind = 0")?
        .query_row([prev_rev], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((value, create_revision)) = row else {
        return Err(StoreError::Backend(format!("history of {key} lacks revision {prev_rev} (replaced at {rev})")));
    };
    Ok(Some(KeyValue { key: key.to_string(), value, create_revision, mod_revision: prev_rev }))
}

/// `key` as of `at`, from the history: what its first change after `at` replaced. This scans
/// the history after `at`; only exact reads at an older revision of a single key come here.
fn historical(conn: &Connection, key: &str, at: Revision) -> StoreResult<Option<KeyValue>> {
    let first = conn
        .prepare_cached("SELECT rev, prev_rev FROM log NOT INDEXED WHERE rev > ?1 AND key = ?2 ORDER BY rev LIMIT 1")?
        .query_row(params![at, key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    match first {
        Some((rev, prev_rev)) => replaced(conn, key, rev, prev_rev),
        // Not changed since: it did not exist then either (it is not in `kv`).
        None => Ok(None),
    }
}

fn version_at(conn: &Connection, key: &str, at: Revision, current: Revision) -> StoreResult<Option<KeyValue>> {
    match latest(conn, key)? {
        Some(kv) if kv.mod_revision <= at => Ok(Some(kv)),
        None if at == current => Ok(None),
        _ => historical(conn, key, at),
    }
}

fn kv_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue { key: row.get(0)?, value: row.get(1)?, create_revision: row.get(2)?, mod_revision: row.get(3)? })
}

/// A range read at one revision.
///
/// Keys not written since `at` are read through `kv` (`mod_rev <= at`); keys written since (few,
/// for a recent `at`: a paginated list's later pages) are read from `log` and merged in.
fn range_in(conn: &mut Connection, req: &RangeRequest) -> StoreResult<RangeResponse> {
    let tx = conn.transaction()?;
    let snapshot = Snapshot::read(&tx)?;
    let at = snapshot.resolve(req.revision)?;
    if req.end.is_empty() {
        let kvs: Vec<_> = version_at(&tx, &req.start, at, snapshot.current)?.into_iter().collect();
        return Ok(RangeResponse { count: kvs.len(), kvs, more: false, revision: at });
    }
    if req.end <= req.start {
        return Ok(RangeResponse { revision: at, ..RangeResponse::default() });
    }

    let mut changed = BTreeMap::new();
    let mut changed_live = 0;
    if at < snapshot.current {
        // Each key's first change after `at` (a bare column beside MIN() comes from that row).
        let mut first_changes = tx.prepare_cached(
            "SELECT key, MIN(rev), prev_rev FROM log NOT INDEXED WHERE rev > ?1 AND key >= ?2 AND key < ?3 GROUP BY key",
        )?;
        let first_changes = first_changes
            .query_map(params![at, req.start, req.end], |row| Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut live = tx.prepare_cached("SELECT 1 FROM kv WHERE key = ?1")?;
        for (key, rev, prev_rev) in first_changes {
            if live.exists([&key])? {
                changed_live += 1;
            }
            if let Some(kv) = replaced(&tx, &key, rev, prev_rev)? {
                changed.insert(key, kv);
            }
        }
    }

    // SQLite reads a negative LIMIT as no limit.
    let limit = if req.limit == 0 { -1 } else { i64::try_from(req.limit).unwrap_or(i64::MAX) };
    let mut unchanged = tx.prepare_cached(
        "SELECT k.key, l.value, k.create_rev, k.mod_rev FROM kv AS k CROSS JOIN log AS l ON l.rev = k.mod_rev \
         WHERE k.key >= ?1 AND k.key < ?2 AND k.mod_rev <= ?3 ORDER BY k.key LIMIT ?4",
    )?;
    let unchanged = unchanged.query_map(params![req.start, req.end, at, limit], kv_from_row)?;
    let changed_count = changed.len();
    let mut kvs = Vec::new();
    let mut from_log = changed.into_values().peekable();
    for kv in unchanged {
        let kv = kv?;
        while let Some(older) = from_log.next_if(|older| older.key < kv.key) {
            kvs.push(older);
        }
        kvs.push(kv);
    }
    kvs.extend(from_log);
    if req.limit > 0 {
        kvs.truncate(req.limit);
    }

    let count = if req.limit == 0 {
        kvs.len()
    } else {
        // Keys live now, minus those written since `at` (they are all in `changed_live`), plus
        // those that existed at `at` among them.
        let now: i64 = tx
            .prepare_cached("SELECT COUNT(*) FROM kv WHERE key >= ?1 AND key < ?2")?
            .query_row(params![req.start, req.end], |row| row.get(0))?;
        usize::try_from(now).unwrap_or(0).saturating_sub(changed_live) + changed_count
    };
    Ok(RangeResponse { more: count > kvs.len(), count, kvs, revision: at })
}

/// Up to [`REPLAY_CHUNK`] history rows after `after` in `[prefix, end)`, as events for keys under
/// `prefix`; the revision up to which history has been covered; whether more may follow.
fn replay_in(
    conn: &mut Connection,
    prefix: &str,
    end: &str,
    after: Revision,
) -> StoreResult<(Vec<Event>, Revision, bool)> {
    let tx = conn.transaction()?;
    let snapshot = Snapshot::read(&tx)?;
    if after < snapshot.compacted {
        return Err(StoreError::Compacted { requested: after, compacted: snapshot.compacted });
    }
    if after >= snapshot.current {
        return Ok((Vec::new(), after, false));
    }
    let mut stmt = tx.prepare_cached(
        "SELECT l.rev, l.key, l.value, l.create_rev, l.prev_rev, l.kind, p.value, p.create_rev \
         FROM log AS l NOT INDEXED LEFT JOIN log AS p ON p.rev = l.prev_rev \
         WHERE l.rev > ?1 AND l.key >= ?2 AND l.key < ?3 ORDER BY l.rev LIMIT ?4",
    )?;
    let mut rows = stmt.query(params![after, prefix, end, REPLAY_CHUNK as i64])?;
    let (mut events, mut scanned, mut last) = (Vec::new(), 0, after);
    while let Some(row) = rows.next()? {
        scanned += 1;
        let rev: Revision = row.get(0)?;
        last = rev;
        let key: String = row.get(1)?;
        if !key.starts_with(prefix) {
            continue;
        }
        let prev_rev: Revision = row.get(4)?;
        let prev = match (prev_rev, row.get::<_, Option<Vec<u8>>>(6)?) {
            (0, _) => None,
            (_, Some(value)) => {
                Some(KeyValue { key: key.clone(), value, create_revision: row.get(7)?, mod_revision: prev_rev })
            }
            (_, None) => return Err(StoreError::Backend(format!("history of {key} lacks revision {prev_rev}"))),
        };
        let create_revision = row.get(3)?;
        let event = match (row.get::<_, i64>(5)?, prev) {
            (PUT, prev) => Event {
                kind: EventKind::Put,
                kv: KeyValue { key, value: row.get(2)?, create_revision, mod_revision: rev },
                prev,
            },
            (DELETE, Some(prev)) => Event {
                kind: EventKind::Delete,
                kv: KeyValue { key, value: prev.value.clone(), create_revision, mod_revision: rev },
                prev: Some(prev),
            },
            (kind, _) => return Err(StoreError::Backend(format!("bad history row {rev} (kind {kind})"))),
        };
        events.push(event);
    }
    if scanned < REPLAY_CHUNK { Ok((events, snapshot.current, false)) } else { Ok((events, last, true)) }
}

/// Feeds one watcher: replay from `log`, then live events, replaying again after falling behind.
struct WatchTask {
    shared: Arc<Shared>,
    prefix: String,
    end: String,
    tx: mpsc::Sender<StoreResult<Event>>,
    /// Every event up to here has been sent (or did not match).
    last: Revision,
}

impl WatchTask {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Event>>, mut replay: bool) {
        loop {
            // `live` was subscribed before the replay's snapshot, so replay and live overlap
            // rather than leave a gap; the overlap is skipped by revision.
            while replay {
                let (prefix, end, after) = (self.prefix.clone(), self.end.clone(), self.last);
                let chunk = read(&self.shared, move |c| replay_in(c, &prefix, &end, after)).await;
                let (events, covered, more) = match chunk {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        let _ = self.tx.send(Err(error)).await;
                        return;
                    }
                };
                for event in events {
                    if self.tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                self.last = covered;
                replay = more;
            }
            loop {
                let received = tokio::select! {
                    received = live.recv() => received,
                    () = self.tx.closed() => return,
                };
                match received {
                    Ok(event) => {
                        let rev = event.kv.mod_revision;
                        if rev <= self.last {
                            continue;
                        }
                        if event.kv.key.starts_with(&self.prefix) && self.tx.send(Ok((*event).clone())).await.is_err() {
                            return;
                        }
                        self.last = rev;
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, last = self.last, "watcher fell behind; replaying from history");
                        live = live.resubscribe();
                        replay = true;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

/// A compaction in progress: rows up to `target` are being cleaned, chunk by chunk.
struct CompactJob {
    target: Revision,
    waiters: Vec<oneshot::Sender<StoreResult<()>>>,
}

/// The writer thread: owns the write connection.
struct Writer {
    conn: Connection,
    rev: Revision,
    compacted: Revision,
    /// `log` rows up to here have had their superseded versions removed.
    compact_done: Revision,
    job: Option<CompactJob>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Event>>,
}

type Outcome = StoreResult<(KeyValue, Event)>;

impl Writer {
    fn run(core: &Mutex<Writer>, idle: &AtomicBool, queue: std_mpsc::Receiver<Command>) {
        let _span = tracing::info_span!("store_writer").entered();
        let lock = || core.lock().unwrap_or_else(PoisonError::into_inner);
        // Writes in the previous commit.
        let mut last_batch = 0usize;
        loop {
            let compacting = lock().job.is_some();
            let first = if compacting {
                match queue.try_recv() {
                    Ok(command) => Some(command),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                idle.store(true, Ordering::Release);
                let next = queue.recv();
                idle.store(false, Ordering::Release);
                match next {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            // Take whatever else is already queued; never wait for more. When the last commit
            // was shared, other writers are about: give up the CPU once (a no-op on an idle one)
            // so that the request handlers it would otherwise wait on enqueue their writes into
            // this commit rather than the next. The connection is not held meanwhile.
            let (mut writes, mut compactions) = (Vec::new(), Vec::new());
            let first_taken = first.is_some();
            let mut next = first;
            let mut yielded = last_batch < 2;
            while let Some(command) = next {
                match command {
                    Command::Write(write) => writes.push(write),
                    Command::Compact { revision, reply } => compactions.push((revision, reply)),
                }
                let room = writes.len() < MAX_BATCH;
                next = if room { queue.try_recv().ok() } else { None };
                if next.is_none() && room && !yielded {
                    yielded = true;
                    std::thread::yield_now();
                    next = queue.try_recv().ok();
                }
            }
            if first_taken {
                last_batch = writes.len();
            }
            let mut writer = lock();
            if !writes.is_empty() {
                writer.commit(writes);
            }
            for (revision, reply) in compactions {
                writer.start_compaction(revision, reply);
            }
            if writer.job.is_some() {
                writer.compaction_step();
            }
        }
        debug!(revision = lock().rev, "store writer stopped");
    }

    /// Commits a batch in one transaction, then answers each request and publishes its event.
    fn commit(&mut self, batch: Vec<PendingWrite>) {
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|write| (write.op, write.reply)).unzip();
        match self.apply_all(ops) {
            Ok((outcomes, rev)) => {
                self.rev = rev;
                {
                    // Before any reply: a client that saw its write acknowledged reads it back.
                    let mut latest = self.shared.latest.write().unwrap_or_else(PoisonError::into_inner);
                    for (_, event) in outcomes.iter().flatten() {
                        match event.kind {
                            EventKind::Put => latest.insert(event.kv.key.clone(), Arc::new(event.kv.clone())),
                            EventKind::Delete => latest.remove(&event.kv.key),
                        };
                    }
                }
                self.shared.current.store(rev, Ordering::SeqCst);
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    let answer = outcome.map(|(kv, event)| {
                        // No receivers is not an error.
                        let _ = self.events.send(Arc::new(event));
                        kv
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                warn!(%error, requests = replies.len(), "write transaction failed");
                let error = StoreError::from(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn apply_all(&mut self, ops: Vec<WriteOp>) -> rusqlite::Result<(Vec<Outcome>, Revision)> {
        let start = self.rev;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rev = start;
        // Conditions are checked against the in-memory latest values (no SELECT per write), with
        // the changes of this batch laid over them until the commit publishes them.
        let latest = self.shared.latest.read().unwrap_or_else(PoisonError::into_inner);
        let mut batch: HashMap<String, Option<KeyValue>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let key = op.key();
            let current = match batch.get(key) {
                Some(changed) => changed.clone(),
                None => latest.get(key).map(|kv| (**kv).clone()),
            };
            let outcome = apply(&tx, op, current, &mut rev)?;
            if let Ok((_, event)) = &outcome {
                let after = (event.kind == EventKind::Put).then(|| event.kv.clone());
                batch.insert(event.kv.key.clone(), after);
            }
            outcomes.push(outcome);
        }
        drop(latest);
        if rev == start {
            tx.rollback()?;
        } else {
            tx.commit()?;
        }
        Ok((outcomes, rev))
    }

    fn start_compaction(&mut self, revision: Revision, reply: oneshot::Sender<StoreResult<()>>) {
        if revision > self.rev {
            let _ = reply.send(Err(StoreError::FutureRevision { requested: revision, current: self.rev }));
            return;
        }
        if revision <= self.compacted {
            match &mut self.job {
                // Answer once the history below `revision` is really gone.
                Some(job) => job.waiters.push(reply),
                None => {
                    let _ = reply.send(Ok(()));
                }
            }
            return;
        }
        // Record the new floor first, so no read below it starts while rows are removed.
        let recorded = self.conn.execute("UPDATE meta SET value = ?1 WHERE name = 'compacted'", [revision]);
        if let Err(error) = recorded {
            let _ = reply.send(Err(error.into()));
            return;
        }
        self.compacted = revision;
        self.shared.compacted.store(revision, Ordering::SeqCst);
        let job = self.job.get_or_insert_with(|| CompactJob { target: revision, waiters: Vec::new() });
        job.target = revision;
        job.waiters.push(reply);
    }

    /// Removes one chunk of superseded history. A row is superseded when a later row of its key
    /// is at or below the target: that later row names it in `prev_rev`. A delete at or below the
    /// target is a tombstone nobody can read any more; what it deleted is its own `prev_rev`.
    fn compaction_step(&mut self) {
        let Some(target) = self.job.as_ref().map(|job| job.target) else { return };
        let from = self.compact_done;
        let mut step = || -> rusqlite::Result<(Revision, usize)> {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let to = tx
                .query_row(
                    "SELECT rev FROM log WHERE rev > ?1 AND rev <= ?2 ORDER BY rev LIMIT 1 OFFSET ?3",
                    params![from, target, COMPACT_CHUNK - 1],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(target);
            let superseded = tx.execute(
                "DELETE FROM log WHERE rev IN \
                 (SELECT prev_rev FROM log WHERE rev > ?1 AND rev <= ?2 AND prev_rev > 0)",
                [from, to],
            )?;
            let tombstones = tx.execute("DELETE FROM log WHERE rev > ?1 AND rev <= ?2 AND kind = 1", [from, to])?;
            tx.execute("UPDATE meta SET value = ?1 WHERE name = 'compact_done'", [to])?;
            tx.commit()?;
            Ok((to, superseded + tombstones))
        };
        match step() {
            Ok((to, removed)) => {
                self.compact_done = to;
                debug!(from, to, removed, "compaction step");
                if to >= target {
                    self.reclaim_space();
                    for waiter in self.job.take().map(|job| job.waiters).unwrap_or_default() {
                        let _ = waiter.send(Ok(()));
                    }
                }
            }
            Err(error) => {
                warn!(%error, target, "compaction failed");
                let error = StoreError::from(error);
                for waiter in self.job.take().map(|job| job.waiters).unwrap_or_default() {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
        }
    }

    /// After a compaction: give free pages back to the file system when they are a large part of
    /// it, and truncate an oversized WAL. Failures only cost disk space, so they are logged.
    fn reclaim_space(&mut self) {
        let vacuum = || -> rusqlite::Result<i64> {
            let free: i64 = self.conn.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
            let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
            if free == 0 || free * 4 < pages {
                return Ok(0);
            }
            // Each step frees one page and yields a row.
            let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            Ok(free)
        };
        match vacuum() {
            Ok(0) => {}
            Ok(freed) => debug!(freed, "returned free pages"),
            Err(error) => warn!(%error, "incremental vacuum failed"),
        }
        // Truncating the WAL is the exception, not the rule: a WAL that is reused (after each
        // checkpoint reset) is overwritten in place, and on this machine an fdatasync after an
        // overwrite takes ~0.1 ms against ~3.4 ms after an append (the file size must reach the
        // ext4 journal). `journal_size_limit` already trims the WAL at each reset, so only a WAL
        // left oversized by a reader that held a checkpoint back is truncated here. TRUNCATE
        // waits for such readers, and writes wait behind it: keep the wait short.
        let wal = fs::metadata(sibling(&self.shared.path, "-wal")).map(|m| m.len()).unwrap_or(0);
        if wal <= WAL_SIZE_LIMIT as u64 {
            return;
        }
        let checkpoint = || -> rusqlite::Result<bool> {
            self.conn.busy_timeout(CHECKPOINT_TIMEOUT)?;
            let busy = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0));
            self.conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(busy? != 0)
        };
        match checkpoint() {
            Ok(false) => debug!(wal, "WAL truncated"),
            Ok(true) => debug!(wal, "WAL checkpoint deferred: readers busy"),
            Err(error) => warn!(%error, "WAL checkpoint failed"),
        }
    }
}

/// Applies one write inside the batch's transaction. The outer error aborts the whole
/// transaction; the inner one is this request's answer (its condition failed, nothing written).
/// `current`: the key's latest value as the batch has left it so far.
fn apply(
    tx: &Transaction<'_>,
    op: WriteOp,
    current: Option<KeyValue>,
    rev: &mut Revision,
) -> rusqlite::Result<Outcome> {
    let log = |rev: Revision, key: &str, value: Option<&[u8]>, create: Revision, prev: Revision, kind: i64| {
        tx.prepare_cached(
            "INSERT INTO log (rev, key, value, create_rev, prev_rev, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![rev, key, value, create, prev, kind])
    };
    let conflict = |key: String, expected: Revision, old: KeyValue| -> Outcome {
        Err(StoreError::Conflict { key, expected, current: Some(Box::new(old)) })
    };
    Ok(match (op, current) {
        (WriteOp::Create { key, .. }, Some(_)) => Err(StoreError::AlreadyExists { key }),
        (WriteOp::Update { key, .. } | WriteOp::Delete { key, .. }, None) => Err(StoreError::NotFound { key }),
        (WriteOp::Update { key, expected, .. } | WriteOp::Delete { key, expected }, Some(old))
            if expected != 0 && old.mod_revision != expected =>
        {
            conflict(key, expected, old)
        }
        (WriteOp::Create { key, value }, None) => {
            *rev += 1;
            tx.prepare_cached("INSERT INTO kv (key, create_rev, mod_rev) VALUES (?1, ?2, ?2)")?
                .execute(params![key, *rev])?;
            log(*rev, &key, Some(&value), *rev, 0, PUT)?;
            let kv = KeyValue { key, value, create_revision: *rev, mod_revision: *rev };
            Ok((kv.clone(), Event { kind: EventKind::Put, kv, prev: None }))
        }
        (WriteOp::Update { key, value, .. }, Some(old)) => {
            *rev += 1;
            tx.prepare_cached("UPDATE kv SET mod_rev = ?2 WHERE key = ?1")?.execute(params![key, *rev])?;
            log(*rev, &key, Some(&value), old.create_revision, old.mod_revision, PUT)?;
            let kv = KeyValue { key, value, create_revision: old.create_revision, mod_revision: *rev };
            Ok((kv.clone(), Event { kind: EventKind::Put, kv, prev: Some(old) }))
        }
        (WriteOp::Delete { key, .. }, Some(old)) => {
            *rev += 1;
            tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([&key])?;
            log(*rev, &key, None, old.create_revision, old.mod_revision, DELETE)?;
            let kv =
                KeyValue { key, value: old.value.clone(), create_revision: old.create_revision, mod_revision: *rev };
            Ok((kv.clone(), Event { kind: EventKind::Delete, kv, prev: Some(old) }))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command as Process, Stdio};
    use std::time::Instant;

    use super::*;

    fn open_temp() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("state.db")).expect("open store");
        (dir, store)
    }

    fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
        KeyValue { key: key.to_string(), value: value.as_bytes().to_vec(), create_revision, mod_revision }
    }

    async fn next(rx: &mut WatchReceiver) -> StoreResult<Event> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("watch event within 10 s")
            .expect("watch still open")
    }

    async fn keys(store: &SqliteStore, req: RangeRequest) -> Vec<String> {
        store.range(req).await.expect("range").kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test]
    async fn create_update_delete_with_conditions() {
        let (_dir, store) = open_temp();
        let a = store.create("/a", b"1".to_vec()).await.expect("create");
        assert_eq!(a, kv("/a", "1", 1, 1));
        assert_eq!(store.create("/a", b"x".to_vec()).await, Err(StoreError::AlreadyExists { key: "/a".into() }));

        let a2 = store.update("/a", b"2".to_vec(), 1).await.expect("update at the right revision");
        assert_eq!(a2, kv("/a", "2", 1, 2));
        let stale = store.update("/a", b"3".to_vec(), 1).await;
        let expected = StoreError::Conflict { key: "/a".into(), expected: 1, current: Some(Box::new(a2.clone())) };
        assert_eq!(stale, Err(expected));
        assert_eq!(store.current_revision().await.expect("revision"), 2, "a failed condition takes no revision");
        assert_eq!(store.update("/a", b"3".to_vec(), 0).await.expect("unconditional"), kv("/a", "3", 1, 3));
        assert_eq!(store.update("/nope", b"".to_vec(), 0).await, Err(StoreError::NotFound { key: "/nope".into() }));

        assert!(matches!(store.delete("/a", 2).await, Err(StoreError::Conflict { current: Some(_), .. })));
        assert_eq!(store.delete("/a", 3).await.expect("delete"), kv("/a", "3", 1, 4));
        assert_eq!(store.get("/a", 0).await.expect("get"), None);
        assert_eq!(store.delete("/a", 0).await, Err(StoreError::NotFound { key: "/a".into() }));
        assert_eq!(store.create("/a", b"new".to_vec()).await.expect("recreate"), kv("/a", "new", 5, 5));
        assert_eq!(store.delete("/a", 0).await.expect("unconditional delete"), kv("/a", "new", 5, 6));
        assert_eq!(store.current_revision().await.expect("revision"), 6);
    }

    #[tokio::test]
    async fn a_failing_transaction_fails_its_whole_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let shared = Arc::new(Shared {
            path: path.clone(),
            readers: Mutex::new(Vec::new()),
            read_slots: Semaphore::new(1),
            current: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            latest: RwLock::default(),
        });
        let (events, mut published) = broadcast::channel(16);
        let conn = open_writer(&path).expect("open writer");
        let mut writer = Writer { conn, rev: 0, compacted: 0, compact_done: 0, job: None, shared, events };
        let batch = |keys: &[&str]| {
            let (writes, answers): (Vec<_>, Vec<_>) = keys
                .iter()
                .map(|key| {
                    let (reply, answer) = oneshot::channel();
                    (PendingWrite { op: WriteOp::Create { key: key.to_string(), value: vec![1] }, reply }, answer)
                })
                .unzip();
            (writes, answers)
        };
        // Revision 2 is taken behind the writer's back, so the batch's second write fails.
        writer.conn.execute("INSERT INTO log VALUES (2, '/x', x'00', 2, 0, 0)", []).expect("plant a row");
        let (writes, answers) = batch(&["/a", "/b", "/c"]);
        writer.commit(writes);
        for answer in answers {
            assert!(matches!(answer.await.expect("answered"), Err(StoreError::Backend(_))));
        }
        assert!(published.try_recv().is_err(), "nothing published");
        let count = |sql: &str| writer.conn.query_row(sql, [], |row| row.get::<_, i64>(0)).expect("count");
        assert_eq!(count("SELECT COUNT(*) FROM kv"), 0, "nothing half-written");
        assert_eq!(count("SELECT COUNT(*) FROM log WHERE rev <> 2"), 0, "no log row either");
        assert!(writer.shared.latest.read().expect("map").is_empty(), "nor kept in memory");

        writer.conn.execute("DELETE FROM log WHERE rev = 2", []).expect("remove the row");
        let (writes, answers) = batch(&["/a", "/a", "/b"]);
        writer.commit(writes);
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.expect("answered").map(|kv| kv.mod_revision));
        }
        assert_eq!(results, [Ok(1), Err(StoreError::AlreadyExists { key: "/a".into() }), Ok(2)]);
        assert_eq!((writer.rev, writer.shared.current.load(Ordering::SeqCst)), (2, 2));
        assert_eq!(published.try_recv().expect("event").kv.mod_revision, 1);
        assert_eq!(published.try_recv().expect("event").kv.mod_revision, 2);

        // Later writes of one batch see the earlier ones: conditions are checked against them.
        let ops = [
            WriteOp::Update { key: "/a".into(), value: vec![2], expected: 1 },
            WriteOp::Update { key: "/a".into(), value: vec![3], expected: 1 },
            WriteOp::Delete { key: "/a".into(), expected: 3 },
            WriteOp::Create { key: "/a".into(), value: vec![4] },
        ];
        let (writes, answers): (Vec<_>, Vec<_>) = ops
            .into_iter()
            .map(|op| {
                let (reply, answer) = oneshot::channel();
                (PendingWrite { op, reply }, answer)
            })
            .unzip();
        writer.commit(writes);
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.expect("answered").map(|kv| kv.mod_revision).map_err(|e| e.to_string()));
        }
        assert_eq!(results[0], Ok(3));
        assert!(results[1].as_ref().is_err_and(|e| e.contains("modified")), "{:?}", results[1]);
        assert_eq!(results[2..], [Ok(4), Ok(5)]);
        let latest = writer.shared.latest.read().expect("map");
        assert_eq!(
            latest.get("/a").map(|kv| (kv.value.clone(), kv.create_revision, kv.mod_revision)),
            Some((vec![4], 5, 5))
        );
        assert_eq!(latest.get("/b").map(|kv| kv.mod_revision), Some(2));
    }

    #[tokio::test]
    async fn range_prefix_limit_more_count() {
        let (_dir, store) = open_temp();
        for key in ["/r/pods/b", "/r/pods/a", "/r/pods/a0", "/r/pods/c", "/r/podsx", "/r/q", "/r/pods/\u{e9}"] {
            store.create(key, key.as_bytes().to_vec()).await.expect("create");
        }
        let all = store.range(RangeRequest::prefix("/r/pods/")).await.expect("range");
        let names: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(names, ["/r/pods/a", "/r/pods/a0", "/r/pods/b", "/r/pods/c", "/r/pods/\u{e9}"], "byte order");
        assert_eq!((all.count, all.more, all.revision), (5, false, 7));
        assert_eq!(all.kvs[0].value, b"/r/pods/a");

        let page = store.range(RangeRequest { limit: 2, ..RangeRequest::prefix("/r/pods/") }).await.expect("page");
        assert_eq!(page.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/r/pods/a", "/r/pods/a0"]);
        assert_eq!((page.count, page.more), (5, true));
        let rest = RangeRequest { start: "/r/pods/a0\0".into(), limit: 10, ..RangeRequest::prefix("/r/pods/") };
        let rest = store.range(rest).await.expect("next page");
        assert_eq!((rest.kvs.len(), rest.count, rest.more), (3, 3, false));

        let one = store.range(RangeRequest { start: "/r/q".into(), ..Default::default() }).await.expect("one");
        assert_eq!((one.kvs.len(), one.count), (1, 1));
        let none = store.range(RangeRequest { start: "/r/zz".into(), ..Default::default() }).await.expect("none");
        assert_eq!((none.kvs.len(), none.count), (0, 0));
        let backwards = RangeRequest { start: "/r/z".into(), end: "/r/a".into(), ..Default::default() };
        assert!(store.range(backwards).await.expect("empty range").kvs.is_empty());
        assert_eq!(keys(&store, RangeRequest::prefix("")).await.len(), 7);
        let future = store.range(RangeRequest { revision: 8, ..RangeRequest::prefix("/") }).await;
        assert_eq!(future.expect_err("future"), StoreError::FutureRevision { requested: 8, current: 7 });
    }

    #[tokio::test]
    async fn reads_at_an_older_revision() {
        let (_dir, store) = open_temp();
        for key in ["/k/a", "/k/b", "/k/c", "/k/e"] {
            store.create(key, b"v1".to_vec()).await.expect("create");
        }
        let then = store.current_revision().await.expect("revision");
        store.update("/k/a", b"v2".to_vec(), 0).await.expect("update");
        store.delete("/k/b", 0).await.expect("delete");
        store.create("/k/d", b"v1".to_vec()).await.expect("create");
        store.delete("/k/e", 0).await.expect("delete");
        store.create("/k/e", b"v2".to_vec()).await.expect("recreate");

        let old = store.range(RangeRequest { revision: then, ..RangeRequest::prefix("/k/") }).await.expect("old");
        assert_eq!(
            old.kvs,
            vec![kv("/k/a", "v1", 1, 1), kv("/k/b", "v1", 2, 2), kv("/k/c", "v1", 3, 3), kv("/k/e", "v1", 4, 4)]
        );
        assert_eq!((old.count, old.revision), (4, then));
        let page = store.range(RangeRequest { revision: then, limit: 2, ..RangeRequest::prefix("/k/") }).await;
        let page = page.expect("old page");
        assert_eq!(page.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/k/a", "/k/b"]);
        assert_eq!((page.count, page.more), (4, true));
        assert_eq!(store.get("/k/b", then).await.expect("get old"), Some(kv("/k/b", "v1", 2, 2)));
        assert_eq!(store.get("/k/d", then).await.expect("get old"), None);
        assert_eq!(store.get("/k/a", 0).await.expect("get"), Some(kv("/k/a", "v2", 1, 5)));
        let now = store.range(RangeRequest::prefix("/k/")).await.expect("now");
        assert_eq!(now.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/k/a", "/k/c", "/k/d", "/k/e"]);
        assert_eq!(now.kvs[3], kv("/k/e", "v2", 9, 9));
    }

    #[tokio::test]
    async fn compaction_keeps_reads_at_and_after_it() {
        let (_dir, store) = open_temp();
        store.create("/c/a", b"1".to_vec()).await.expect("create"); // 1
        store.create("/c/b", b"1".to_vec()).await.expect("create"); // 2
        store.update("/c/a", b"2".to_vec(), 0).await.expect("update"); // 3
        store.delete("/c/b", 0).await.expect("delete"); // 4
        store.create("/c/z", b"1".to_vec()).await.expect("create"); // 5
        store.update("/c/a", b"3".to_vec(), 0).await.expect("update"); // 6
        store.delete("/c/z", 0).await.expect("delete"); // 7

        assert_eq!(store.compact(8).await, Err(StoreError::FutureRevision { requested: 8, current: 7 }));
        store.compact(5).await.expect("compact");
        assert_eq!(store.compacted_revision(), 5);
        store.compact(3).await.expect("compacting below the compacted revision is a no-op");
        assert_eq!(store.get("/c/a", 4).await, Err(StoreError::Compacted { requested: 4, compacted: 5 }));
        let at = store.range(RangeRequest { revision: 5, ..RangeRequest::prefix("/c/") }).await.expect("at 5");
        assert_eq!(at.kvs, vec![kv("/c/a", "2", 1, 3), kv("/c/z", "1", 5, 5)]);
        let at6 = store.range(RangeRequest { revision: 6, ..RangeRequest::prefix("/c/") }).await.expect("at 6");
        assert_eq!(at6.kvs, vec![kv("/c/a", "3", 1, 6), kv("/c/z", "1", 5, 5)]);
        assert_eq!(store.watch("/c/", 4).await.err(), Some(StoreError::Compacted { requested: 4, compacted: 5 }));
        let mut rx = store.watch("/c/", 5).await.expect("watch from the compacted revision");
        let event = next(&mut rx).await.expect("event");
        assert_eq!((event.kv.clone(), event.prev), (kv("/c/a", "3", 1, 6), Some(kv("/c/a", "2", 1, 3))));
        let event = next(&mut rx).await.expect("event");
        assert_eq!(
            (event.kind, event.kv, event.prev),
            (EventKind::Delete, kv("/c/z", "1", 5, 7), Some(kv("/c/z", "1", 5, 5)))
        );

        store.compact(7).await.expect("compact everything");
        assert_eq!(log_rows(&store).await, 1, "only the latest version of the one live key is left");
        assert_eq!(store.get("/c/a", 7).await.expect("get"), Some(kv("/c/a", "3", 1, 6)));
    }

    async fn log_rows(store: &SqliteStore) -> i64 {
        read(&store.shared, |c| Ok(c.query_row("SELECT COUNT(*) FROM log", [], |r| r.get(0))?)).await.expect("count")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_runs_in_chunks_beside_writes_and_resumes_after_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let store = Arc::new(SqliteStore::open(&path).expect("open"));
        write_many(&store, "/big/", 50, 10).await;
        let churn = |store: Arc<SqliteStore>, rounds: usize| async move {
            for i in 0..rounds {
                store.update(&format!("/big/{:06}", i % 50), vec![i as u8; 32], 0).await.expect("update");
            }
        };
        let tasks: Vec<_> = (0..10).map(|_| tokio::spawn(churn(Arc::clone(&store), 500))).collect();
        for task in tasks {
            task.await.expect("churn");
        }
        let target = store.current_revision().await.expect("revision");
        assert_eq!(target, 5050);
        let expected = store.range(RangeRequest::prefix("/big/")).await.expect("range").kvs;
        // Writes go on while the compaction works through 5050 rows, COMPACT_CHUNK at a time.
        let during = tokio::spawn(churn(Arc::clone(&store), 300));
        store.compact(target).await.expect("compact");
        during.await.expect("writes during compaction");
        let at = store.range(RangeRequest { revision: target, ..RangeRequest::prefix("/big/") }).await;
        assert_eq!(at.expect("range at the compacted revision").kvs, expected);
        let rows = log_rows(&store).await;
        assert!(rows <= 50 + 300, "{rows} history rows left");

        // A compaction cut short by a crash: recorded, but no row removed yet.
        let tasks: Vec<_> = (0..10).map(|_| tokio::spawn(churn(Arc::clone(&store), 200))).collect();
        for task in tasks {
            task.await.expect("churn");
        }
        let current = store.current_revision().await.expect("revision");
        drop(Arc::into_inner(store).expect("sole owner"));
        let conn = Connection::open(&path).expect("raw connection");
        conn.execute("UPDATE meta SET value = ?1 WHERE name = 'compacted'", [current]).expect("record");
        drop(conn);
        let store = SqliteStore::open(&path).expect("reopen");
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_rows(&store).await > 50 {
            assert!(Instant::now() < deadline, "interrupted compaction not resumed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.range(RangeRequest::prefix("/big/")).await.expect("range").kvs.len(), 50);
    }

    #[tokio::test]
    async fn watch_replays_history_then_follows_live() {
        let (_dir, store) = open_temp();
        store.create("/w/a", b"1".to_vec()).await.expect("create"); // 1
        store.create("/x/a", b"1".to_vec()).await.expect("create"); // 2
        store.update("/w/a", b"2".to_vec(), 1).await.expect("update"); // 3
        store.create("/w/b", b"1".to_vec()).await.expect("create"); // 4
        store.delete("/w/a", 0).await.expect("delete"); // 5

        let mut now = store.watch("/w/", 0).await.expect("watch from now");
        let mut rx = store.watch("/w/", 1).await.expect("watch");
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next(&mut rx).await.expect("event"));
        }
        assert_eq!(
            seen[0],
            Event { kind: EventKind::Put, kv: kv("/w/a", "2", 1, 3), prev: Some(kv("/w/a", "1", 1, 1)) }
        );
        assert_eq!(seen[1], Event { kind: EventKind::Put, kv: kv("/w/b", "1", 4, 4), prev: None });
        let deleted = Event { kind: EventKind::Delete, kv: kv("/w/a", "2", 1, 5), prev: Some(kv("/w/a", "2", 1, 3)) };
        assert_eq!(seen[2], deleted);

        store.create("/x/b", b"1".to_vec()).await.expect("create"); // 6, other prefix
        store.update("/w/b", b"2".to_vec(), 4).await.expect("update"); // 7
        let live = Event { kind: EventKind::Put, kv: kv("/w/b", "2", 4, 7), prev: Some(kv("/w/b", "1", 4, 4)) };
        assert_eq!(next(&mut rx).await.expect("live event"), live);
        assert_eq!(next(&mut now).await.expect("only new events"), live);
        assert!(rx.try_recv().is_err(), "nothing else");
        assert!(matches!(store.watch("/w/", -1).await, Err(StoreError::Backend(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_watcher_catches_up_from_history() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        let mut rx = store.watch("/s/", 0).await.expect("watch");
        let total = (LIVE_EVENTS + WATCH_BUFFER) * 2;
        write_many(&store, "/s/", total, 20).await;
        for expected in 1..=total as Revision {
            let event = next(&mut rx).await.expect("no event lost");
            assert_eq!(event.kv.mod_revision, expected, "in order, without gaps");
        }
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_behind_compaction_gets_an_error() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        let mut rx = store.watch("/s/", 0).await.expect("watch");
        write_many(&store, "/s/", LIVE_EVENTS + WATCH_BUFFER * 2, 20).await;
        store.compact(store.current_revision().await.expect("revision")).await.expect("compact");
        let mut last = 0;
        let error = loop {
            match next(&mut rx).await {
                Ok(event) => {
                    assert_eq!(event.kv.mod_revision, last + 1, "no gap before the error");
                    last += 1;
                }
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StoreError::Compacted { .. }), "{error:?}");
        assert!(rx.recv().await.is_none(), "the watch ends after its error");
    }

    /// Creates `count` keys under `prefix` from `writers` concurrent tasks; returns their revisions.
    async fn write_many(store: &Arc<SqliteStore>, prefix: &str, count: usize, writers: usize) -> Vec<Revision> {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (store, prefix) = (Arc::clone(store), prefix.to_string());
                tokio::spawn(async move {
                    let mut revisions = Vec::new();
                    for i in (w..count).step_by(writers) {
                        let kv = store.create(&format!("{prefix}{i:06}"), vec![b'v'; 64]).await.expect("create");
                        revisions.push(kv.mod_revision);
                    }
                    revisions
                })
            })
            .collect();
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.extend(task.await.expect("writer task"));
        }
        revisions
    }

    /// Lone writes commit on the caller's thread, bursts go through the writer thread: mixed,
    /// every write is answered once, in one revision sequence, and watched in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lone_and_concurrent_writes_share_one_revision_sequence() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        let mut watch = store.watch("/m/", 0).await.expect("watch");
        let mut revisions = Vec::new();
        for round in 0..20 {
            // The writer thread goes back to waiting after answering the last burst.
            for _ in 0..1000 {
                if store.idle.load(Ordering::Acquire) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let before = store.inline_commits.load(Ordering::Relaxed);
            let kv = store.create(&format!("/m/lone-{round:02}"), vec![b'l'; 32]).await.expect("lone create");
            revisions.push(kv.mod_revision);
            let updated = store.update(&kv.key, vec![b'u'; 32], kv.mod_revision).await.expect("lone update");
            assert_eq!(updated.mod_revision, kv.mod_revision + 1, "nothing else was writing");
            revisions.push(updated.mod_revision);
            assert_eq!(store.inline_commits.load(Ordering::Relaxed), before + 2, "lone writes commit inline");
            revisions.extend(write_many(&store, &format!("/m/burst-{round:02}-"), 50, 10).await);
        }
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=(20 * 52)).collect::<Vec<_>>());
        let all = store.range(RangeRequest::prefix("/m/")).await.expect("range");
        assert_eq!((all.kvs.len(), all.revision), (20 * 51, 20 * 52));
        assert!(all.kvs.iter().filter(|kv| kv.key.contains("lone")).all(|kv| kv.value == vec![b'u'; 32]));
        for expected in 1..=(20 * 52) {
            assert_eq!(next(&mut watch).await.expect("event").kv.mod_revision, expected);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_get_unique_consecutive_revisions() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        let mut revisions = write_many(&store, "/p/", 5000, 100).await;
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=5000).collect::<Vec<_>>());
        let all = store.range(RangeRequest::prefix("/p/")).await.expect("range");
        assert_eq!((all.kvs.len(), all.count, all.revision), (5000, 5000, 5000));
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_revision() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data/state.db");
        let store = SqliteStore::open(&path).expect("open");
        for i in 0..10 {
            store.create(&format!("/o/{i}"), vec![i]).await.expect("create");
        }
        store.delete("/o/9", 0).await.expect("delete"); // 11
        store.compact(11).await.expect("compact everything");
        assert!(matches!(SqliteStore::open(&path), Err(StoreError::Backend(_))), "one store per file");
        drop(store);

        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.current_revision().await.expect("revision"), 11, "survives even with the log compacted");
        assert_eq!(store.compacted_revision(), 11);
        let all = store.range(RangeRequest::prefix("/o/")).await.expect("range");
        assert_eq!(all.kvs.len(), 9);
        assert_eq!(all.kvs[3], KeyValue { key: "/o/3".into(), value: vec![3], create_revision: 4, mod_revision: 4 });
        // Latest reads come from the in-memory copy, which a reopen rebuilds from the file.
        assert_eq!(store.get("/o/3", 0).await.expect("get"), Some(all.kvs[3].clone()));
        assert_eq!(store.get("/o/9", 0).await.expect("get"), None, "the deleted key stays deleted");
        assert_eq!(store.create("/o/new", vec![]).await.expect("create").mod_revision, 12);
        store.update("/o/3", vec![33], 4).await.expect("update");
        let got = store.get("/o/3", 0).await.expect("get").expect("present");
        assert_eq!((got.value, got.create_revision, got.mod_revision), (vec![33], 4, 13));
        store.delete("/o/3", 0).await.expect("delete");
        assert_eq!(store.get("/o/3", 0).await.expect("get"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_use_stays_bounded_under_churn() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        for i in 0..100 {
            store.create(&format!("/d/{i:03}"), vec![0; 512]).await.expect("create");
        }
        let mut peak = 0;
        for _round in 0..10 {
            let tasks: Vec<_> = (0..10)
                .map(|w| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for i in 0..200 {
                            let key = format!("/d/{:03}", w * 10 + i % 10);
                            store.update(&key, vec![i as u8; 512], 0).await.expect("update");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("writer");
            }
            compact_keeping(&*store, 100).await.expect("compact");
            peak = peak.max(store.size_on_disk());
        }
        assert_eq!(store.current_revision().await.expect("revision"), 20_100);
        let db = fs::metadata(store.path()).expect("db file").len();
        // Uncompacted, the history alone would take over 10 MB; the WAL cycles at ~4 MiB.
        assert!(db < 2 << 20, "database file {db} bytes after 20 000 updates of 100 keys");
        assert!(peak < 7 << 20, "disk use {peak} bytes (database and WAL)");
        eprintln!("after 20 000 updates: database {db} bytes, peak with WAL {peak} bytes");
    }

    #[tokio::test]
    async fn compactor_task_follows_the_current_revision() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        for i in 0..30 {
            store.create(&format!("/t/{i}"), vec![]).await.expect("create");
        }
        let task = spawn_compactor(&store, Duration::from_millis(20), 10);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.compacted_revision() != 20 {
            assert!(Instant::now() < deadline, "compactor did not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(store);
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends with the store").expect("task");
    }

    /// A tiny deterministic generator for the model test.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random writes checked against a model: every read at every revision still available, and
    /// watch replay from each, match.
    #[tokio::test]
    async fn matches_a_model_at_every_revision() {
        let (_dir, store) = open_temp();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut states = vec![BTreeMap::<String, KeyValue>::new()];
        let mut events: Vec<Event> = Vec::new();
        for step in 0..600 {
            let key = format!("/m/{}", rng.below(12));
            let state = states.last().expect("state").clone();
            let rev = states.len() as Revision;
            let old = state.get(&key).cloned();
            let choice = rng.below(4);
            let result = match (choice, &old) {
                (0, _) => store.create(&key, format!("{step}").into_bytes()).await,
                (1, _) => store.delete(&key, 0).await,
                (2, Some(old)) if step % 3 == 0 => store.update(&key, vec![], old.mod_revision - 1).await,
                _ => store.update(&key, format!("{step}").into_bytes(), 0).await,
            };
            let mut next_state = state.clone();
            match (choice, old, result) {
                (0, None, Ok(kv)) | (2 | 3, Some(_), Ok(kv)) if kv.mod_revision == rev => {
                    let prev = next_state.insert(key, kv.clone());
                    events.push(Event { kind: EventKind::Put, kv, prev });
                }
                (1, Some(old), Ok(kv)) if kv.mod_revision == rev => {
                    next_state.remove(&key);
                    events.push(Event { kind: EventKind::Delete, kv, prev: Some(old) });
                }
                (0, Some(_), Err(StoreError::AlreadyExists { .. }))
                | (1..=3, None, Err(StoreError::NotFound { .. }))
                | (2, Some(_), Err(StoreError::Conflict { .. })) => continue,
                (choice, old, result) => panic!("step {step}: op {choice} on {old:?} gave {result:?}"),
            }
            states.push(next_state);
            if step == 250 || step == 450 {
                store.compact(rev - 40).await.expect("compact");
            }
        }
        let current = store.current_revision().await.expect("revision");
        let compacted = store.compacted_revision();
        assert_eq!(current, states.len() as Revision - 1);
        for at in compacted..=current {
            let expected: Vec<_> = states[at as usize].values().cloned().collect();
            let req = RangeRequest { revision: at, ..RangeRequest::prefix("/m/") };
            assert_eq!(store.range(req.clone()).await.expect("range").kvs, expected, "range at {at}");
            let page = store.range(RangeRequest { limit: 3, ..req }).await.expect("page");
            assert_eq!(page.kvs, expected[..expected.len().min(3)], "page at {at}");
            assert_eq!((page.count, page.more), (expected.len(), expected.len() > 3), "count at {at}");
            for i in 0..12 {
                let key = format!("/m/{i}");
                let got = store.get(&key, at).await.expect("get");
                assert_eq!(got.as_ref(), states[at as usize].get(&key), "{key} at {at}");
            }
        }
        for after in [compacted, compacted + 17, current - 1] {
            let mut rx = store.watch("/m/", after).await.expect("watch");
            for expected in &events[after as usize..] {
                assert_eq!(&next(&mut rx).await.expect("event"), expected, "watch after {after}");
            }
        }
        assert!(matches!(store.get("/m/1", compacted - 1).await, Err(StoreError::Compacted { .. })));
    }

    /// Writes until killed (only when re-executed by `acknowledged_writes_survive_sigkill`).
    #[test]
    fn crash_child_writer() {
        let Some(path) = std::env::var_os(CRASH_CHILD) else { return };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        runtime.expect("runtime").block_on(async move {
            let store = Arc::new(SqliteStore::open(Path::new(&path)).expect("open in child"));
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for i in 0.. {
                            let key = format!("/crash/{w}/{i}");
                            let kv = store.create(&key, vec![b'x'; 100]).await.expect("create in child");
                            // Straight to stdout, not through the test harness's capture.
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "{key} {} ack", kv.mod_revision).expect("stdout");
                            out.flush().expect("flush");
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await.expect("writer");
            }
        });
    }

    const CRASH_CHILD: &str = "KEELSON_STORE_CRASH_CHILD";

    #[test]
    fn acknowledged_writes_survive_sigkill() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let test = format!("{}::crash_child_writer", module_path!().split_once("::").expect("crate::path").1);
        let mut child = Process::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (lines_tx, lines) = std_mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(60)).expect("the child acknowledges a write");
        std::thread::sleep(Duration::from_millis(300));
        child.kill().expect("SIGKILL the child");
        assert!(!child.wait().expect("reap").success());
        reader.join().expect("reader thread");

        let mut acked: Vec<(String, Revision)> = Vec::new();
        for line in std::iter::once(first).chain(lines.try_iter()) {
            if let Some(("", rest)) = line.split_once("/crash/")
                && let [key, rev, "ack"] = rest.split(' ').collect::<Vec<_>>()[..]
            {
                acked.push((format!("/crash/{key}"), rev.parse().expect("revision")));
            }
        }
        assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let store = SqliteStore::open(&path).expect("reopen after SIGKILL");
            let mut last_per_writer = BTreeMap::new();
            for (key, rev) in &acked {
                let stored = store.get(key, 0).await.expect("get").unwrap_or_else(|| panic!("{key} lost"));
                assert_eq!(stored.mod_revision, *rev, "{key}");
                let writer = key.split('/').nth(2).expect("writer id").to_string();
                let last = last_per_writer.insert(writer, *rev).unwrap_or(0);
                assert!(*rev > last, "revisions grow per writer");
            }
            let max = acked.iter().map(|(_, rev)| *rev).max().expect("some acks");
            let current = store.current_revision().await.expect("revision");
            assert!(current >= max);
            let all = store.range(RangeRequest::prefix("/crash/")).await.expect("range");
            assert_eq!(all.count as Revision, current, "every revision is one create");
            assert!(store.create("/after", vec![]).await.expect("write after crash").mod_revision > current);
        });
        eprintln!("{} acknowledged writes survived SIGKILL", acked.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throughput() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        for writers in [1, 10, 100] {
            let count = writers * 40 + 500;
            let start = Instant::now();
            write_many(&store, &format!("/tp/{writers}/"), count, writers).await;
            let rate = count as f64 / start.elapsed().as_secs_f64();
            eprintln!("{writers:>3} concurrent writers: {rate:>8.0} writes/s");
            assert!(rate > 50.0, "{rate} writes/s");
        }
    }
}
