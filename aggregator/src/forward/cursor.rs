//! A WAL reader's position: the acknowledged one in memory, and the one persisted in a file
//! of its own (what a restart resumes from, and what the WAL hold keeps).

use std::path::PathBuf;
use std::sync::Mutex;

use telltale_common::codec;

use crate::durable::feed::Position;
use crate::durable::frames;

/// A reader's position and its file.
pub struct Cursor {
    /// Names the reader in log lines.
    what: String,
    /// The acknowledged position (`None`: not started yet).
    position: Mutex<Option<Position>>,
    /// The position last written to `path`.
    persisted: Mutex<Option<Position>>,
    /// Where the position is persisted.
    path: PathBuf,
}

impl Cursor {
    /// The cursor persisted in `path`, if any (a missing or damaged file: not started).
    pub fn load(path: PathBuf, what: String) -> Cursor {
        let position = frames::read_frames(&path)
            .ok()
            .and_then(|f| f.payloads.first().cloned())
            .and_then(|p| codec::decode_borrowed::<Position>(&p).ok());
        Cursor {
            what,
            position: Mutex::new(position),
            persisted: Mutex::new(position),
            path,
        }
    }

    /// The acknowledged position.
    pub fn position(&self) -> Option<Position> {
        *self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The position persisted last.
    pub fn persisted(&self) -> Option<Position> {
        *self.persisted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Persists the acknowledged position if it moved; `true` when it did.
    pub fn persist(&self) -> bool {
        let Some(p) = self.position() else {
            return false;
        };
        let mut done = self.persisted.lock().unwrap_or_else(|e| e.into_inner());
        if *done == Some(p) {
            return false;
        }
        let res = codec::encode_payload(&p)
            .map_err(std::io::Error::other)
            .and_then(|b| frames::write_atomic(&self.path, &[b]));
        match res {
            Ok(()) => {
                *done = Some(p);
                true
            }
            Err(e) => {
                // The reader goes on; a restart would resend from the last saved position.
                tracing::warn!(reader = %self.what, path = %self.path.display(), error = %e, "cannot save a WAL reader's position");
                false
            }
        }
    }

    /// Starts at `p` (persisted at once).
    pub fn start_at(&self, p: Position) {
        self.set(p);
        self.persist();
    }

    /// Moves the acknowledged position.
    pub fn set(&self, p: Position) {
        *self.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }
}
