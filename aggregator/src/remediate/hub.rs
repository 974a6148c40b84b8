//! The agents that can take commands right now: ingest registers each connection whose hello
//! announced the `remediation` capability, with the channel its writer drains; remediation
//! sends through it. Connections and results coming back are handed to the remediation
//! driver as [`HubEvent`]s on the channel the hub was made with (wired in `serve.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use telltale_common::wire::{Command, CommandResult, ServerMessage};
use tokio::sync::mpsc;

/// What the hub tells the remediation driver.
#[derive(Debug)]
pub enum HubEvent {
    /// An agent that takes commands connected (queued commands for it can go now).
    Connected(String),
    /// A command's result from an agent (the name from its certificate).
    Result(String, CommandResult),
}

/// A connection's id, its command channel and the actions its agent announced.
type Conn = (u64, mpsc::Sender<ServerMessage>, Vec<String>);

/// Connections able to take commands, by agent name.
pub struct Hub {
    conns: Mutex<HashMap<String, Conn>>,
    next: AtomicU64,
    /// Unbounded on purpose: ingest acknowledges a result to its agent right after handing it
    /// here, so a full channel could only drop an acknowledged result. The rate is bounded by
    /// the connections themselves (each result waits for its acknowledgement's place in the
    /// connection's bounded writer queue), and the driver takes an event in microseconds.
    events: mpsc::UnboundedSender<HubEvent>,
}

impl Hub {
    /// A hub reporting connections and results on `events`.
    pub fn new(events: mpsc::UnboundedSender<HubEvent>) -> Hub {
        Hub {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            events,
        }
    }

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
        // The remediation driver stops only with the process.
        let _ = self.events.send(HubEvent::Connected(agent.to_string()));
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
        if self
            .events
            .send(HubEvent::Result(agent.to_string(), r))
            .is_err()
        {
            tracing::warn!(agent, "command result with no remediation running");
        }
    }
}
