//! The agents that can take commands right now: ingest registers each connection whose hello
//! announced the `remediation` capability, with the channel its writer drains; remediation
//! sends through it. Results coming back are handed to the remediation side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use telltale_common::wire::{Command, CommandResult, ServerMessage};
use tokio::sync::mpsc;

type ResultFn = Box<dyn Fn(&str, CommandResult) + Send + Sync>;
type ConnectFn = Box<dyn Fn(&str) + Send + Sync>;

/// A connection's id, its command channel and the actions its agent announced.
type Conn = (u64, mpsc::Sender<ServerMessage>, Vec<String>);

/// Connections able to take commands, by agent name.
#[derive(Default)]
pub struct Hub {
    conns: Mutex<HashMap<String, Conn>>,
    next: AtomicU64,
    on_result: OnceLock<ResultFn>,
    on_connect: OnceLock<ConnectFn>,
}

impl Hub {
    /// Registers `agent`'s connection with the actions its hello announced (none from an
    /// older agent); returns its id for [`Hub::unregister`].
    pub fn register(
        &self,
        agent: &str,
        tx: mpsc::Sender<ServerMessage>,
        actions: Vec<String>,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.to_string(), (id, tx, actions));
        if let Some(f) = self.on_connect.get() {
            f(agent);
        }
        id
    }

    /// Forgets connection `id` of `agent` (a newer connection stays).
    pub fn unregister(&self, agent: &str, id: u64) {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if c.get(agent).is_some_and(|(i, _, _)| *i == id) {
            c.remove(agent);
        }
    }

    /// Whether `agent` can take a command now.
    pub fn connected(&self, agent: &str) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(agent)
    }

    /// Whether connected `agent` offers `action`: `None` when it is not connected or did not
    /// say (an agent from before actions were announced).
    pub fn offers(&self, agent: &str, action: &str) -> Option<bool> {
        let c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let (_, _, actions) = c.get(agent)?;
        (!actions.is_empty()).then(|| actions.iter().any(|a| a == action))
    }

    /// The actions offered by the connected agents that announced theirs (`None` if none did).
    pub fn offered(&self) -> Option<std::collections::HashSet<String>> {
        let c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut any = false;
        let mut set = std::collections::HashSet::new();
        for (_, _, actions) in c.values() {
            any |= !actions.is_empty();
            set.extend(actions.iter().cloned());
        }
        any.then_some(set)
    }

    /// Queues `cmd` for `agent`; false if it is not connected or its queue is full.
    pub fn send(&self, agent: &str, cmd: Command) -> bool {
        let tx = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent)
            .map(|(_, tx, _)| tx.clone());
        tx.is_some_and(|tx| tx.try_send(ServerMessage::Command(cmd)).is_ok())
    }

    /// A result from `agent` (the name from its certificate).
    pub fn result(&self, agent: &str, r: CommandResult) {
        match self.on_result.get() {
            Some(f) => f(agent, r),
            None => tracing::warn!(agent, id = %r.id, "command result with no remediation running"),
        }
    }

    /// Sets what happens with results and connections (once).
    pub fn set_handlers(&self, on_result: ResultFn, on_connect: ConnectFn) {
        let _ = self.on_result.set(on_result);
        let _ = self.on_connect.set(on_connect);
    }
}
