//! Durable storage of a machine's persisted state (the bytes of `io::PersistState`).
//!
//! One file per machine in the node's state directory, replaced atomically
//! ([`crate::statedir::write_atomic`]). Writes are executed strictly in the order they were
//! submitted, by one writer task, so an older state can never land after a newer one; each is
//! reported as an `io::WriteCompleted` once durable (or failed). The machine acts on a state
//! only after its completion, as the core contract requires.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cm_core::codec::{self, DecodeError};
use cm_core::io::{PersistState, WriteCompleted};
use tokio::sync::mpsc;

use crate::statedir::{self, FileError};

/// Why a persisted state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] FileError),
    /// The file exists but is not a valid persisted state (torn write, bit rot, wrong file).
    #[error("corrupt state file {}: {source} (restore it from a backup, or move it aside to \
             start this process with empty state, forgetting the terms it had recorded)",
            .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
}

/// The state file of one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store at `path` (its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state at start: `None` when there is none yet; the bytes when their frame and
    /// checksum are valid (the machine decodes the body); an error naming the file otherwise.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = statedir::read(&self.path)? else {
            return Ok(None);
        };
        codec::check_persisted(&bytes).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        Ok(Some(bytes))
    }

    /// Writes one state durably (blocking) and says how it went.
    pub fn write(&self, persist: &PersistState) -> WriteCompleted {
        WriteCompleted {
            token: persist.token,
            result: statedir::write_atomic(&self.path, &persist.bytes).map_err(|e| e.to_string()),
        }
    }
}

/// Why [`StoreWriter::submit`] refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue of pending writes is full (the disk is far behind).
    #[error("the state write queue is full")]
    QueueFull,
    /// The writer task has stopped.
    #[error("the state writer has stopped")]
    Stopped,
}

/// The writer task's handle: submit `PersistState`s; completions arrive on the channel given
/// to [`StoreWriter::spawn`], mapped into the machine's input type.
#[derive(Clone, Debug)]
pub struct StoreWriter {
    queue: mpsc::Sender<PersistState>,
    refused: Arc<AtomicU64>,
}

impl StoreWriter {
    /// Starts the writer task on the current tokio runtime. `capacity` bounds the queue of
    /// pending writes; `to_input` turns a completion into the machine's input.
    pub fn spawn<I: Send + 'static>(
        store: Store,
        capacity: usize,
        completions: mpsc::Sender<I>,
        to_input: fn(WriteCompleted) -> I,
    ) -> Self {
        let (queue, mut rx) = mpsc::channel::<PersistState>(capacity.max(1));
        let writer = Self {
            queue,
            refused: Arc::new(AtomicU64::new(0)),
        };
        let store = Arc::new(store);
        tokio::spawn(async move {
            while let Some(persist) = rx.recv().await {
                let s = Arc::clone(&store);
                let token = persist.token;
                let done = tokio::task::spawn_blocking(move || s.write(&persist))
                    .await
                    .unwrap_or_else(|e| WriteCompleted {
                        token,
                        result: Err(format!("state writer thread failed: {e}")),
                    });
                if let Err(e) = &done.result {
                    tracing::error!(path = %store.path().display(), token = token.0, "state write failed: {e}");
                }
                if completions.send(to_input(done)).await.is_err() {
                    break;
                }
            }
        });
        writer
    }

    /// Queues a write. When it is refused (queue full, writer stopped) the error is the
    /// failed completion the machine must still be given.
    pub fn submit(&self, persist: PersistState) -> Result<(), WriteCompleted> {
        self.queue.try_send(persist).map_err(|e| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let (why, p) = match e {
                mpsc::error::TrySendError::Full(p) => (SubmitError::QueueFull, p),
                mpsc::error::TrySendError::Closed(p) => (SubmitError::Stopped, p),
            };
            WriteCompleted {
                token: p.token,
                result: Err(why.to_string()),
            }
        })
    }

    /// How many writes were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}
