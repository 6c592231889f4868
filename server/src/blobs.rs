//! Content-addressed blob store: `blobs/<first two hex>/<sha256>`.
//!
//! An upload streams into a temp file under `tmp/` while it is hashed, so
//! memory stays constant whatever the size. Only a complete, fsynced file is
//! renamed into place; a writer dropped before [`BlobWriter::finish`] (a
//! client that disconnects, a limit hit) deletes its temp file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::util::sync_dir;

#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
}

pub struct BlobWriter {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

/// A stored blob: its hash and size.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
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
        Ok(BlobStore { root, tmp })
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
        Ok(Blob { sha256, size })
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

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    crate::util::now_ms() * 1000 + N.fetch_add(1, Ordering::Relaxed) % 1000
}
