//! Content-addressed blob store: `blobs/<first two hex>/<sha256>`.
//!
//! An upload streams into a temp file under `tmp/` while it is hashed, so
//! memory stays constant whatever the size. Only a complete, fsynced file is
//! renamed into place; a writer dropped before [`BlobWriter::finish`] (a
//! client that disconnects, a limit hit) deletes its temp file.
//!
//! Blobs no app version or job uses any more are deleted by retention
//! ([`BlobStore::remove_unused`]). A blob just written is pinned until
//! the row that uses it is recorded (its [`Blob`] is dropped), so a
//! collection that runs between the two never takes it: an upload of bytes
//! already stored, whose old users retention has just deleted, keeps them.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::util::sync_dir;

#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    pins: Pins,
}

type Pins = Arc<Mutex<HashMap<String, usize>>>;

pub struct BlobWriter {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

/// A stored blob: its hash and size. While it (or a clone) lives, the blob
/// is pinned: retention does not delete it.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
    pub pin: Pin,
}

/// Keeps a blob from collection while held; see the module header.
#[derive(Clone, Default)]
pub struct Pin(Option<Arc<PinInner>>);

struct PinInner {
    pins: Pins,
    sha256: String,
}

impl Drop for PinInner {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.sha256);
            }
        }
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Pin" } else { "Unpinned" })
    }
}

/// Pins say nothing of a blob's identity.
impl PartialEq for Pin {
    fn eq(&self, _: &Pin) -> bool {
        true
    }
}

#[derive(Debug)]
pub enum WriteError {
    TooLarge(u64),
    Io(std::io::Error),
}

impl BlobStore {
    pub fn open(data_dir: &Path) -> std::io::Result<BlobStore> {
        let root = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&tmp)?;
        // Temp files from a crash mid-upload were never acknowledged.
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(BlobStore {
            root,
            tmp,
            pins: Pins::default(),
        })
    }

    fn pin(&self, sha256: &str) -> Pin {
        *self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sha256.to_string())
            .or_default() += 1;
        Pin(Some(Arc::new(PinInner {
            pins: self.pins.clone(),
            sha256: sha256.to_string(),
        })))
    }

    /// Deletes those of `shas` that are neither pinned nor `in_use`. The
    /// pins are held while each is checked and deleted, so a commit of the
    /// same bytes either pins first (and the blob stays) or finds it gone
    /// and puts it back. Returns how many blobs and bytes were freed.
    pub fn remove_unused<E>(
        &self,
        shas: &[String],
        mut in_use: impl FnMut(&str) -> Result<bool, E>,
    ) -> Result<(u64, u64), E> {
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let (mut n, mut bytes) = (0, 0);
        for sha in shas.iter().filter(|s| is_sha256(s)) {
            if pins.contains_key(sha) || in_use(sha)? {
                continue;
            }
            let path = self.path(sha);
            let size = match std::fs::symlink_metadata(&path) {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    n += 1;
                    bytes += size;
                }
                Err(e) => tracing::warn!(error = %e, "cannot delete {}", path.display()),
            }
        }
        Ok((n, bytes))
    }

    /// Every stored blob's hash (for the full collection at start).
    pub fn list(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for dir in std::fs::read_dir(&self.root)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(dir.path())? {
                let name = f?.file_name();
                if let Some(n) = name.to_str().filter(|n| is_sha256(n)) {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    pub async fn writer(&self, limit: u64) -> std::io::Result<BlobWriter> {
        let path = self
            .tmp
            .join(format!("upload-{}-{}", std::process::id(), unique()));
        let file = tokio::fs::File::create(&path).await?;
        Ok(BlobWriter {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Stores bytes already in memory (the dispatcher's own, such as a
    /// job's peer list), durably, as an upload would.
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<Blob> {
        let mut w = self.writer(u64::MAX).await?;
        for chunk in bytes.chunks(1 << 16) {
            w.write(chunk).await.map_err(|e| match e {
                WriteError::Io(e) => e,
                WriteError::TooLarge(_) => unreachable!("no limit"),
            })?;
        }
        self.commit(w).await
    }

    /// Moves a finished upload into place (or drops it when the same content
    /// is already stored) and returns its identity.
    pub async fn commit(&self, mut w: BlobWriter) -> std::io::Result<Blob> {
        let mut file = w.file.take().expect("writer is committed once");
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let sha256 = hex::encode(w.hasher.clone().finalize());
        let dest = self.path(&sha256);
        let tmp = w.path.clone();
        let size = w.size;
        // Pinned before looking for an existing copy: see the module header.
        let pin = self.pin(&sha256);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = dest.parent().expect("blob path has a parent");
            std::fs::create_dir_all(dir)?;
            if dest.exists() {
                std::fs::remove_file(&tmp)?;
                return Ok(());
            }
            // Apps are programs: stored executable, never writable.
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
            std::fs::rename(&tmp, &dest)?;
            sync_dir(dir)
        })
        .await
        .map_err(std::io::Error::other)??;
        w.path = PathBuf::new();
        Ok(Blob { sha256, size, pin })
    }
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(WriteError::TooLarge(self.limit));
        }
        self.hasher.update(chunk);
        self.file
            .as_mut()
            .expect("open writer")
            .write_all(chunk)
            .await
            .map_err(WriteError::Io)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// 64 lowercase hex digits: the only names the store makes or deletes.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    crate::util::now_ms() * 1000 + N.fetch_add(1, Ordering::Relaxed) % 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_being_recorded_is_not_collected_until_its_writer_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let b = store.put(b"program").await.unwrap();
        let unused = |_: &str| Ok::<_, ()>(false);
        assert_eq!(
            store.remove_unused(std::slice::from_ref(&b.sha256), unused),
            Ok((0, 0))
        );
        assert!(store.path(&b.sha256).exists(), "pinned: kept");
        // The same bytes again (an upload that finds them stored) pins too.
        let again = store.put(b"program").await.unwrap();
        drop(b);
        assert_eq!(
            store.remove_unused(std::slice::from_ref(&again.sha256), unused),
            Ok((0, 0))
        );
        let sha = again.sha256.clone();
        drop(again);
        let in_use = |_: &str| Ok::<_, ()>(true);
        assert_eq!(
            store.remove_unused(std::slice::from_ref(&sha), in_use),
            Ok((0, 0))
        );
        assert_eq!(
            store.remove_unused(std::slice::from_ref(&sha), unused),
            Ok((1, 7))
        );
        assert!(!store.path(&sha).exists());
        assert!(store.list().unwrap().is_empty());
        // Names that are not hashes are never turned into paths.
        assert_eq!(
            store.remove_unused(&["../../etc/passwd".into()], unused),
            Ok((0, 0))
        );
    }
}
