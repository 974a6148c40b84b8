//! A client and a server joined in memory: an agent with a buffer, an aggregator with a
//! store that de-duplicates by (epoch, sequence), and links that can lose bytes.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::model::{Labels, Sample, SeriesSamples};
use crate::wire::{Batch, ClientMessage};

/// The agent's side: a buffer of encoded batches, results waiting for acknowledgement, and
/// the ids it ran (an id runs at most once).
struct Agent {
    epoch: u64,
    buffer: BTreeMap<u64, (Vec<u8>, u32)>,
    pending: BTreeMap<String, CommandResult>,
    ran: BTreeSet<String>,
}

impl Agent {
    fn new(epoch: u64, batches: u64) -> Agent {
        let mut buffer = BTreeMap::new();
        for seq in 1..=batches {
            let b = Batch {
                sequence: seq,
                created_ms: 0,
                series: vec![SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m")]),
                    samples: vec![Sample(seq as i64, 1.0), Sample(seq as i64 + 1, 2.0)],
                }],
                events: Vec::new(),
                spans: Vec::new(),
                exemplars: Vec::new(),
                logs: Vec::new(),
            };
            buffer.insert(seq, (frame(&ClientMessage::Batch(b)), 2));
        }
        Agent {
            epoch,
            buffer,
            pending: BTreeMap::new(),
            ran: BTreeSet::new(),
        }
    }
}

/// The aggregator's side.
#[derive(Default)]
struct Aggregator {
    epoch: Option<u64>,
    /// (epoch, sequence) → times it arrived.
    stored: BTreeMap<(u64, u64), u32>,
    results: Vec<String>,
    /// Commands sent on every connection until their result comes.
    commands: Vec<Command>,
}

/// One connection: both state machines and the bytes in flight each way.
struct Link {
    client: Client,
    server: Server,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    now: i64,
}

fn connect(agent: &Agent, window: usize) -> Link {
    let (client, hello) = Client::new(
        &Client::hello(agent.epoch, Some(vec!["restart".into()])),
        window,
    );
    Link {
        client,
        server: Server::new(codec::DEFAULT_MAX_FRAME),
        to_server: hello,
        to_client: Vec::new(),
        now: 1000,
    }
}

impl Link {
    /// The server takes what reached it and answers.
    fn server_turn(&mut self, agg: &mut Aggregator) -> Result<(), SessionError> {
        let bytes = std::mem::take(&mut self.to_server);
        self.server.receive(&bytes)?;
        loop {
            match self.server.poll() {
                Ok(None) => return Ok(()),
                Ok(Some(ServerEvent::Hello(h))) => {
                    agg.epoch = Some(h.epoch);
                    self.to_client.extend(Server::welcome("web-1", 1 << 20));
                    for c in &agg.commands {
                        if !agg.results.contains(&c.id) {
                            self.to_client
                                .extend(Server::message(&ServerMessage::Command(c.clone())));
                        }
                    }
                }
                Ok(Some(ServerEvent::Batch {
                    sequence, payload, ..
                })) => {
                    // The payload is the whole batch, as storage walks it.
                    let m: ClientMessage = codec::decode_payload(&payload)?;
                    assert!(matches!(m, ClientMessage::Batch(b) if b.sequence == sequence));
                    let epoch = agg.epoch.expect("hello first");
                    *agg.stored.entry((epoch, sequence)).or_insert(0) += 1;
                    self.to_client
                        .extend(Server::message(&ServerMessage::Ack { sequence }));
                }
                Ok(Some(ServerEvent::CommandResult(r))) => {
                    if !agg.results.contains(&r.id) {
                        agg.results.push(r.id.clone());
                    }
                    self.to_client
                        .extend(Server::message(&ServerMessage::CommandAck { id: r.id }));
                }
                Err(Ok(refusal)) => {
                    self.to_client.extend(refusal.frame);
                    return Err(SessionError::Refused(refusal.reason));
                }
                Err(Err(e)) => return Err(e),
            }
        }
    }

    /// The client takes what reached it, then fills its window.
    fn client_turn(&mut self, agent: &mut Agent) -> Result<(), SessionError> {
        self.now += 10;
        let bytes = std::mem::take(&mut self.to_client);
        self.client.receive(&bytes)?;
        while let Some(ev) = self.client.poll(self.now)? {
            match ev {
                ClientEvent::Welcomed { .. } => {
                    let pending = agent.pending.values().cloned().collect();
                    self.to_server.extend(self.client.results(pending));
                }
                ClientEvent::Acked { sequence, .. } | ClientEvent::Rejected { sequence, .. } => {
                    agent.buffer.remove(&sequence);
                }
                ClientEvent::Command(c) => {
                    if agent.ran.insert(c.id.clone()) {
                        agent.pending.insert(
                            c.id.clone(),
                            CommandResult {
                                id: c.id,
                                status: "succeeded".into(),
                                reason: String::new(),
                                exit_code: Some(0),
                                started_ms: self.now,
                                duration_ms: 1,
                                stdout_tail: String::new(),
                                stderr_tail: String::new(),
                            },
                        );
                    }
                    let pending = agent.pending.values().cloned().collect();
                    self.to_server.extend(self.client.results(pending));
                }
                ClientEvent::ResultAcked(id) => {
                    agent.pending.remove(&id);
                }
            }
        }
        let unsent: Vec<u64> = agent
            .buffer
            .keys()
            .copied()
            .filter(|s| !self.client.is_in_flight(*s))
            .take(self.client.room())
            .collect();
        for seq in unsent {
            let (f, samples) = &agent.buffer[&seq];
            self.to_server.extend_from_slice(f);
            self.client.sent(seq, *samples, self.now);
        }
        Ok(())
    }
}

#[test]
fn batches_flow_within_the_window_and_each_is_stored_once() {
    let mut agent = Agent::new(7, 10);
    let mut agg = Aggregator::default();
    let mut link = connect(&agent, 3);
    assert_eq!(link.client.room(), 0, "nothing before the welcome");
    for _ in 0..20 {
        link.server_turn(&mut agg).unwrap();
        link.client_turn(&mut agent).unwrap();
        assert!(link.client.in_flight() <= 3);
    }
    assert!(agent.buffer.is_empty(), "left: {:?}", agent.buffer.keys());
    assert_eq!(agg.stored.len(), 10);
    assert!(agg.stored.values().all(|&n| n == 1), "{:?}", agg.stored);
    assert!(
        agg.stored.keys().all(|k| k.0 == 7),
        "stored under the agent's epoch"
    );
    assert_eq!(link.client.ack_deadline(15_000), None);
}

#[test]
fn lost_acknowledgements_are_replayed_on_the_next_connection_and_stored_once() {
    let mut agent = Agent::new(3, 6);
    let mut agg = Aggregator::default();
    let mut link = connect(&agent, 10);
    link.server_turn(&mut agg).unwrap();
    link.client_turn(&mut agent).unwrap(); // welcome: all six go out
    assert_eq!(link.client.in_flight(), 6);
    assert_eq!(link.client.ack_deadline(15_000), Some(link.now + 15_000));
    link.server_turn(&mut agg).unwrap(); // stored and acknowledged...
    link.to_client.clear(); // ...but the acknowledgements are lost with the connection.
    assert_eq!(
        agent.buffer.len(),
        6,
        "nothing leaves the buffer unacknowledged"
    );
    // Half an acknowledgement frame on a dying connection is an error, not a message.
    let mut half = connect(&agent, 10);
    half.client.receive(&Server::welcome("x", 1)[..3]).unwrap();
    assert!(half.client.poll(0).unwrap().is_none());
    assert!(half.client.finish().is_err());
    // Reconnect: everything unacknowledged is sent again; the store keeps one copy.
    let mut link = connect(&agent, 10);
    for _ in 0..5 {
        link.server_turn(&mut agg).unwrap();
        link.client_turn(&mut agent).unwrap();
    }
    assert!(agent.buffer.is_empty());
    assert_eq!(agg.stored.len(), 6);
    assert!(
        agg.stored.values().all(|&n| n == 2),
        "replayed: {:?}",
        agg.stored
    );
}

#[test]
fn a_command_interrupted_by_a_reconnect_runs_once_and_its_result_arrives() {
    let mut agent = Agent::new(1, 0);
    let mut agg = Aggregator {
        commands: vec![Command {
            id: "c1".into(),
            action: "restart".into(),
            params: Vec::new(),
            deadline_ms: i64::MAX,
            dry_run: false,
        }],
        ..Default::default()
    };
    let mut link = connect(&agent, 4);
    link.server_turn(&mut agg).unwrap(); // welcome + command
    link.client_turn(&mut agent).unwrap(); // runs it, sends the result
    assert_eq!(agent.ran.len(), 1);
    assert!(!link.to_server.is_empty(), "the result is written");
    link.to_server.clear(); // the connection dies before the result arrives
    // Next connection: the aggregator sends the command again; the agent does not run it
    // again but sends its result, which the aggregator acknowledges.
    let mut link = connect(&agent, 4);
    for _ in 0..4 {
        link.server_turn(&mut agg).unwrap();
        link.client_turn(&mut agent).unwrap();
    }
    assert_eq!(agent.ran.len(), 1, "an id runs at most once");
    assert_eq!(agg.results, vec!["c1".to_string()]);
    assert!(
        agent.pending.is_empty(),
        "acknowledged results are forgotten"
    );
}

#[test]
fn protocol_violations_are_errors_and_old_versions_are_refused() {
    // A batch before the hello.
    let mut s = Server::new(1 << 20);
    let b = frame(&ClientMessage::Batch(Batch {
        sequence: 1,
        created_ms: 0,
        series: Vec::new(),
        events: Vec::new(),
        spans: Vec::new(),
        exemplars: Vec::new(),
        logs: Vec::new(),
    }));
    s.receive(&b).unwrap();
    assert!(matches!(s.poll(), Err(Err(SessionError::Protocol(m))) if m.contains("hello first")));
    // A hello of another protocol version: refused, with a frame that says why.
    let mut s = Server::new(1 << 20);
    let mut h = Client::hello(1, None);
    h.protocol_version = 99;
    s.receive(&frame(&ClientMessage::Hello(h))).unwrap();
    let Err(Ok(refusal)) = s.poll() else {
        panic!("expected a refusal")
    };
    assert!(refusal.reason.contains("99"), "{}", refusal.reason);
    let mut c = Client::new(&Client::hello(1, None), 1).0;
    c.receive(&refusal.frame).unwrap();
    assert!(matches!(c.poll(0), Err(SessionError::Refused(r)) if r.contains("99")));
    // A second hello after the handshake.
    let mut s = Server::new(1 << 20);
    let hello = frame(&ClientMessage::Hello(Client::hello(1, None)));
    s.receive(&hello).unwrap();
    assert!(matches!(s.poll(), Ok(Some(ServerEvent::Hello(_)))));
    s.receive(&hello).unwrap();
    assert!(matches!(s.poll(), Err(Err(SessionError::Frame(_)))));
    // Garbage and oversized frames.
    let mut s = Server::new(64);
    assert!(s.receive(&[0xff; 16]).is_err() || s.poll().is_err());
    // The client gets an acknowledgement before the welcome.
    let mut c = Client::new(&Client::hello(1, None), 1).0;
    c.receive(&Server::message(&ServerMessage::Ack { sequence: 1 }))
        .unwrap();
    assert!(matches!(c.poll(0), Err(SessionError::Protocol(_))));
    // A command from an agent without actions is refused with a result.
    let refusal = Client::refusal(&Command {
        id: "x".into(),
        action: "a".into(),
        params: Vec::new(),
        deadline_ms: 0,
        dry_run: false,
    });
    let mut s = Server::new(1 << 20);
    s.receive(&hello).unwrap();
    s.poll().unwrap();
    s.receive(&refusal).unwrap();
    assert!(matches!(s.poll(), Ok(Some(ServerEvent::CommandResult(r))) if r.status == "refused"));
}

/// The hello frame of release 0.1's agent (recorded with that release's code, epoch
/// 0x0123456789abcdef, one action): the session still accepts it, and today's hello says the
/// same things in the same encoding.
#[test]
fn a_hello_recorded_from_release_0_1_is_accepted() {
    let recorded = include_bytes!("testdata/hello-0.1.bin");
    let mut s = Server::new(1 << 20);
    s.receive(recorded).unwrap();
    let Ok(Some(ServerEvent::Hello(h))) = s.poll() else {
        panic!("the recorded hello is not accepted")
    };
    assert_eq!(h.epoch, 0x0123_4567_89ab_cdef);
    assert_eq!(h.agent_version, "0.1.0");
    assert_eq!(
        h.capabilities,
        vec![crate::wire::CAP_REMEDIATION.to_string()]
    );
    assert_eq!(h.actions, vec!["restart_service".to_string()]);
    let mut today = Client::hello(h.epoch, Some(h.actions.clone()));
    today.agent_version = h.agent_version.clone();
    assert_eq!(
        Client::new(&today, 1).1,
        recorded.to_vec(),
        "the hello's encoding changed"
    );
}

#[test]
fn a_slow_aggregator_that_answers_is_not_given_up_a_silent_one_is() {
    let hello = Hello {
        protocol_version: crate::PROTOCOL_VERSION,
        agent_version: "t".into(),
        epoch: 1,
        capabilities: Vec::new(),
        actions: Vec::new(),
        sources: Vec::new(),
    };
    let (mut c, _) = Client::new(&hello, 4);
    c.receive(&Server::welcome("a", 1 << 20)).unwrap();
    assert!(matches!(c.poll(0), Ok(Some(ClientEvent::Welcomed { .. }))));
    for seq in 1..=3 {
        c.sent(seq, 1, 0);
    }
    assert_eq!(c.ack_deadline(15_000), Some(15_000));
    // The first acknowledgement comes late (an aggregator working through a backlog): the
    // others get the timeout again from then on.
    c.receive(&frame(&ServerMessage::Ack { sequence: 1 }))
        .unwrap();
    assert!(matches!(
        c.poll(12_000),
        Ok(Some(ClientEvent::Acked { .. }))
    ));
    assert_eq!(c.ack_deadline(15_000), Some(27_000));
    // A batch sent later does not move the deadline earlier or later: the oldest waits.
    c.sent(4, 1, 20_000);
    assert_eq!(c.ack_deadline(15_000), Some(27_000));
    // Silence from then on: the deadline stays where it is, and passes.
    assert!(matches!(c.poll(30_000), Ok(None)));
    assert_eq!(c.ack_deadline(15_000), Some(27_000));
}
