//! The quarantine: the durable on-disk home of every received instance.
//!
//! # Layout (under the data directory)
//!
//! ```text
//! index.redb                       the index (see `index`), the authority on what is stored
//! objects/YYYYMMDD/<key>.dcm       stored instances, Part-10 files, named by internal key
//! objects/YYYYMMDD/<key>.dcm.tmp   an instance being received (never indexed)
//! rejected/<key>.dcm               bytes of refused instances; the reason is in the index
//! outbound/<transfer>/<key>.dcm    de-identified copies of a transfer (`deid::outbound`)
//! run/                             control socket, bound address (runtime state only)
//! ```
//!
//! `<key>` is a ULID made here. No file or directory name is built from anything a sender
//! supplied (UIDs, names, AE titles).
//!
//! # Durability protocol (one instance)
//!
//! 0. A pool thread keeps a few empty `<key>.dcm.tmp` files ready (creating a file can take
//!    a millisecond); an instance takes one, or creates its own when the pool is empty.
//! 1. Bytes stream into `<key>.dcm.tmp` as P-DATA arrives; every [`KICK_WRITEBACK`] bytes the
//!    kernel is asked to start writing back (`posix_fadvise(DONTNEED)`), so little is left to
//!    flush at the end.
//! 2. `fsync(tmp)`, then `rename(tmp, <key>.dcm)` in the same directory.
//! 3. The committer fsyncs the directory (once per batch and directory) and commits the index
//!    records of the whole batch in one transaction.
//! 4. Only then is the C-STORE-RSP with success sent.
//!
//! # Recovery rules (at start)
//!
//! * `*.tmp` files were never acknowledged: deleted.
//! * A `.dcm` in `objects/` whose key is not in the index was renamed but not committed, so it
//!   was never acknowledged: deleted.
//! * A file in `rejected/` without an index record gets one ("reason lost in a crash").
//! * A file in `rejected/` whose record says it was evicted is deleted (a crash came between
//!   the eviction's commit and its unlink; see `evict`).
//!
//! # Invariants
//!
//! * An instance is acknowledged only after its file and directory entry are fsynced and its
//!   index record is committed.
//! * The index never names a file that is not durable.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ulid::Ulid;

/// How many written bytes between hints to start writeback.
pub const KICK_WRITEBACK: u64 = 128 << 10;

/// The quarantine directory tree.
#[derive(Debug, Clone)]
pub struct Quarantine {
    root: PathBuf,
    /// Temp files created ahead of need (see [`Quarantine::start_pool`]); shared by clones.
    pool: Arc<Pool>,
}

/// Temp files created ahead by a background thread, so that creating a file (which costs
/// about a millisecond on some file systems) is off the path between a C-STORE's command
/// and its response. Unused pooled files are removed on drop, or at start after a crash
/// (they are `*.tmp`).
#[derive(Debug, Default)]
struct Pool {
    ready: Mutex<VecDeque<Incoming>>,
    taken: Condvar,
}

/// How many temp files the pool keeps ready.
pub const POOL_SIZE: usize = 8;

/// What the start-up recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recovery {
    pub temp_files_removed: u64,
    pub orphans_removed: u64,
    pub rejected_reindexed: u64,
    /// Files of evicted rejected records that a crash left behind.
    pub evicted_removed: u64,
}

/// What the index says of a file in the rejected area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedFile {
    /// It has its record.
    Recorded,
    /// Its record says it was evicted: a crash came before the unlink.
    Evicted,
    /// No record (refused just before a crash): indexed again.
    Unknown,
}

/// Everything fiona creates from now on is owner-only (directories 0700, files 0600),
/// whatever umask it was started with: the data directory holds patient data (issue 14).
pub fn owner_only_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Take group and other permissions off everything under `root` (and `root` itself):
/// directories become at most 0700, other entries at most 0600 (execute bits dropped).
/// Symbolic links are not followed. Returns how many entries were changed.
pub fn tighten(root: &Path) -> io::Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let mut changed = 0;
    let mut todo = vec![root.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let want = if ft.is_dir() {
            mode & 0o700
        } else {
            mode & 0o600
        };
        if want != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(want))?;
            changed += 1;
        }
        if ft.is_dir() {
            for e in fs::read_dir(&path)? {
                todo.push(e?.path());
            }
        }
    }
    Ok(changed)
}

impl Quarantine {
    /// Create the tree if needed.
    pub fn open(root: &Path) -> io::Result<Quarantine> {
        for d in ["objects", "rejected", "run"] {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(Quarantine {
            root: root.to_owned(),
            pool: Arc::new(Pool::default()),
        })
    }

    /// Keep [`POOL_SIZE`] temp files ready from now on. Call after [`Quarantine::recover`]
    /// (which deletes temp files). The thread ends when every clone of this quarantine is
    /// dropped.
    pub fn start_pool(&self) -> io::Result<()> {
        let weak = Arc::downgrade(&self.pool);
        let root = self.root.clone();
        std::thread::Builder::new()
            .name("fiona-tmp-pool".into())
            .spawn(move || loop {
                let Some(pool) = weak.upgrade() else { return };
                let have = pool.ready.lock().map(|r| r.len()).unwrap_or(POOL_SIZE);
                if have < POOL_SIZE {
                    match create_incoming(&root, time::OffsetDateTime::now_utc()) {
                        Ok(inc) => {
                            if let Ok(mut r) = pool.ready.lock() {
                                r.push_back(inc);
                            }
                        }
                        Err(e) => {
                            // Receiving falls back to creating files itself (and reports
                            // the error there, e.g. a full disk); retry later.
                            tracing::debug!(error = %e, "temp file pool cannot create a file");
                            drop(pool);
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                    continue;
                }
                // Full: wait until a file is taken (or re-check now and then).
                if let Ok(guard) = pool.ready.lock() {
                    let _ = pool.taken.wait_timeout(guard, Duration::from_secs(1));
                };
            })?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.redb")
    }

    /// Absolute path of a stored object from its index-relative path.
    pub fn object_path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Start receiving a new instance: a fresh key and its temp file (from the pool when one
    /// is ready).
    pub fn begin(&self, now: time::OffsetDateTime) -> io::Result<Incoming> {
        let pooled = self.pool.ready.lock().ok().and_then(|mut r| r.pop_front());
        if let Some(inc) = pooled {
            self.pool.taken.notify_one();
            return Ok(inc);
        }
        create_incoming(&self.root, now)
    }

    /// Move a refused instance's bytes into the rejected area (durably) and return the
    /// path relative to the data directory.
    pub fn reject(&self, mut incoming: Incoming) -> io::Result<String> {
        let rel = format!("rejected/{}.dcm", incoming.key);
        let dest = self.root.join(&rel);
        if let Some(f) = incoming.file.take() {
            f.sync_all()?;
        }
        fs::rename(&incoming.tmp, &dest)?;
        sync_dir(&self.root.join("rejected"))?;
        incoming.tmp = PathBuf::new();
        Ok(rel)
    }

    /// Start-up recovery. `is_indexed(key)` says whether an object key is in the index;
    /// `rejection(key)` what the index says of a rejected file; `reindex_rejected(key, rel,
    /// bytes, mtime_ms)` records a rejected file that lost its record.
    pub fn recover(
        &self,
        is_indexed: &dyn Fn(&str) -> bool,
        rejection: &dyn Fn(&str) -> RejectedFile,
        reindex_rejected: &mut dyn FnMut(&str, &str, u64, i64) -> io::Result<()>,
    ) -> io::Result<Recovery> {
        let mut r = Recovery::default();
        let objects = self.root.join("objects");
        for day in fs::read_dir(&objects)? {
            let day = day?;
            if !day.file_type()?.is_dir() {
                continue;
            }
            let mut changed = false;
            for entry in fs::read_dir(day.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".tmp") {
                    fs::remove_file(entry.path())?;
                    r.temp_files_removed += 1;
                    changed = true;
                } else if let Some(key) = name.strip_suffix(".dcm") {
                    if !is_indexed(key) {
                        fs::remove_file(entry.path())?;
                        r.orphans_removed += 1;
                        changed = true;
                    }
                }
            }
            if changed {
                sync_dir(&day.path())?;
            }
        }
        for entry in fs::read_dir(self.root.join("rejected"))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                fs::remove_file(entry.path())?;
                continue;
            }
            if let Some(key) = name.strip_suffix(".dcm") {
                match rejection(key) {
                    RejectedFile::Recorded => {}
                    RejectedFile::Evicted => {
                        fs::remove_file(entry.path())?;
                        r.evicted_removed += 1;
                    }
                    RejectedFile::Unknown => {
                        let meta = entry.metadata()?;
                        let mtime_ms = meta
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_millis() as i64);
                        reindex_rejected(key, &format!("rejected/{name}"), meta.len(), mtime_ms)?;
                        r.rejected_reindexed += 1;
                    }
                }
            }
        }
        Ok(r)
    }

    /// Free bytes available to us on the data file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    /// Total bytes of the data file system.
    pub fn total_bytes(&self) -> io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(s.blocks() as u64 * s.fragment_size() as u64)
    }
}

/// Create a temp file for a new instance under `objects/YYYYMMDD/`.
fn create_incoming(root: &Path, now: time::OffsetDateTime) -> io::Result<Incoming> {
    let key = Ulid::generate();
    let day = format!(
        "{:04}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let dir_rel = format!("objects/{day}");
    let dir = root.join(&dir_rel);
    if !dir.exists() {
        fs::create_dir_all(&dir)?;
        // The new day directory's own entry must be durable too.
        sync_dir(&root.join("objects"))?;
    }
    let final_rel = format!("{dir_rel}/{key}.dcm");
    let tmp = dir.join(format!("{key}.dcm.tmp"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    Ok(Incoming {
        key,
        file: Some(file),
        tmp,
        dir,
        final_rel,
        written: 0,
        kicked: 0,
    })
}

/// An instance being received: its key and temp file. Dropping it without
/// [`Incoming::make_durable`] or [`Quarantine::reject`] removes the temp file.
pub struct Incoming {
    key: Ulid,
    file: Option<File>,
    tmp: PathBuf,
    dir: PathBuf,
    final_rel: String,
    written: u64,
    kicked: u64,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("key", &self.key.to_string())
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// A durably stored file, not yet indexed: the committer makes its directory entry durable
/// and commits its record.
#[derive(Debug, Clone)]
pub struct DurableFile {
    pub key: Ulid,
    /// Path relative to the data directory.
    pub relative: String,
    /// Directory whose entry must be fsynced before the index commit.
    pub dir: PathBuf,
    pub bytes: u64,
}

impl Incoming {
    pub fn key(&self) -> Ulid {
        self.key
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Append bytes; every [`KICK_WRITEBACK`] bytes ask the kernel to start writeback.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("incoming file already closed"))?;
        f.write_all(data)?;
        self.written += data.len() as u64;
        if self.written - self.kicked >= KICK_WRITEBACK {
            use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
            // Start asynchronous writeback of what we wrote (and let the kernel drop it from
            // the cache afterwards: we do not read it again). Advisory: errors are ignored.
            let _ = posix_fadvise(
                &*f,
                self.kicked as i64,
                (self.written - self.kicked) as i64,
                PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            self.kicked = self.written;
        }
        Ok(())
    }

    /// fsync the temp file and rename it to its final name. The directory entry is made
    /// durable later by the committer (batched).
    pub fn make_durable(mut self) -> io::Result<DurableFile> {
        let f = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("incoming file already closed"))?;
        f.sync_all()?;
        drop(f);
        let dest = self.dir.join(format!("{}.dcm", self.key));
        fs::rename(&self.tmp, &dest)?;
        self.tmp = PathBuf::new();
        Ok(DurableFile {
            key: self.key,
            relative: std::mem::take(&mut self.final_rel),
            dir: std::mem::take(&mut self.dir),
            bytes: self.written,
        })
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// fsync a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether an I/O error means the disk is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[test]
    fn durable_write_then_rename() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path()).unwrap();
        let mut inc = q.begin(now()).unwrap();
        inc.write(b"hello").unwrap();
        let tmp = inc.tmp.clone();
        assert!(tmp.exists());
        let done = inc.make_durable().unwrap();
        assert!(!tmp.exists());
        assert_eq!(fs::read(q.object_path(&done.relative)).unwrap(), b"hello");
        assert!(done.relative.starts_with("objects/"));
        assert!(done.relative.ends_with(&format!("{}.dcm", done.key)));
    }

    #[test]
    fn pool_hands_out_distinct_ready_files_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path()).unwrap();
        q.start_pool().unwrap();
        let t = std::time::Instant::now();
        while q.pool.ready.lock().unwrap().len() < POOL_SIZE {
            assert!(t.elapsed() < Duration::from_secs(10), "pool never filled");
            std::thread::sleep(Duration::from_millis(5));
        }
        let a = q.begin(now()).unwrap();
        let b = q.begin(now()).unwrap();
        assert_ne!(a.key(), b.key());
        assert!(a.tmp.exists() && b.tmp.exists());
        let done = a.make_durable().unwrap();
        assert!(q.object_path(&done.relative).exists());
        drop(b);
        // Dropping the last handle removes the pooled temp files (the pool thread lets go
        // of the pool within its one-second wait).
        let q2 = q.clone();
        drop(q);
        drop(q2);
        let left = || -> Vec<String> {
            fs::read_dir(d.path().join("objects"))
                .unwrap()
                .flat_map(|day| fs::read_dir(day.unwrap().path()).unwrap())
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let t = std::time::Instant::now();
        while left().len() > 1 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(left(), vec![format!("{}.dcm", done.key)]);
    }

    #[test]
    fn dropped_incoming_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path()).unwrap();
        let mut inc = q.begin(now()).unwrap();
        inc.write(&[0u8; 100]).unwrap();
        let tmp = inc.tmp.clone();
        drop(inc);
        assert!(!tmp.exists());
    }

    #[test]
    fn recovery_removes_temps_and_orphans_keeps_indexed() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path()).unwrap();
        let mut a = q.begin(now()).unwrap();
        a.write(b"a").unwrap();
        let a = a.make_durable().unwrap();
        let mut b = q.begin(now()).unwrap();
        b.write(b"b").unwrap();
        let b = b.make_durable().unwrap();
        let mut c = q.begin(now()).unwrap();
        c.write(b"c").unwrap();
        std::mem::forget(c); // simulate a crash mid-receive: temp left behind
        let mut r = q.begin(now()).unwrap();
        r.write(b"bad").unwrap();
        let rel = q.reject(r).unwrap();
        let keep = a.key.to_string();
        let mut reindexed = Vec::new();
        let rec = q
            .recover(
                &|k| k == keep,
                &|_| RejectedFile::Unknown,
                &mut |k, rel, n, _| {
                    reindexed.push((k.to_string(), rel.to_string(), n));
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(rec.temp_files_removed, 1);
        assert_eq!(rec.orphans_removed, 1);
        assert_eq!(rec.rejected_reindexed, 1);
        assert!(q.object_path(&a.relative).exists());
        assert!(!q.object_path(&b.relative).exists());
        assert_eq!(reindexed[0].1, rel);
        assert_eq!(reindexed[0].2, 3);
    }
}
